//! `glip serve` over real HTTP on 127.0.0.1 with the tiny golden model: the DeepStack
//! endpoint as DeepStack's clients call it, `/v1/detect` with a prompt per request (both
//! equal to the library's detections), health and metrics, the API key, bad and hostile
//! requests (each a clear 4xx, the server still serving), overload (503 + Retry-After),
//! concurrent clients (no errors below the queue limit, memory flat) and a graceful SIGTERM.
//!
//! The client is a few lines over `TcpStream`, so that requests can also be slow, truncated
//! or malformed on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glip_rt::testing::{rss_kb, E2eGolden};
use serde_json::Value;

struct Server {
    child: Child,
    addr: String,
    /// stderr lines after the "listening" line.
    log: mpsc::Receiver<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_env(extra, &[])
    }

    fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let g = E2eGolden::load("12_e2e_tiny").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_glip"))
            .arg("serve")
            .args(g.model_args())
            .args(["--device", "cpu", "--bind", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // From here on, Drop kills and reaps the child whatever happens.
        let mut server = Server {
            child,
            addr: String::new(),
            log: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.addr.is_empty() {
            let line = server
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the server says where it listens");
            if let Some(rest) = line.strip_prefix("listening on http://") {
                server.addr = rest.split_whitespace().next().unwrap().to_string();
            }
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 answer: its head, then `Content-Length` bytes (or up to the end of
/// the connection when there is none).
fn read_answer(s: TcpStream) -> Answer {
    let mut r = BufReader::new(s);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => head.extend_from_slice(&line),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        }
        None => {
            let _ = r.read_to_end(&mut body);
        }
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = connect(addr);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    read_answer(s)
}

const BOUNDARY: &str = "glip-test-boundary-7d3f";

/// A multipart/form-data body as DeepStack's Python client (requests) sends it.
fn multipart(image: Option<&[u8]>, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some(img) = image {
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"image\"\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(img);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn post_form(addr: &str, path: &str, image: Option<&[u8]>, fields: &[(&str, &str)]) -> Answer {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", &ct)],
        &multipart(image, fields),
    )
}

fn photo() -> Vec<u8> {
    std::fs::read(E2eGolden::load("12_e2e_tiny").unwrap().photo).unwrap()
}

/// The library's detections of the photo with `prompt` (the server's model and defaults).
fn library(prompt: &str) -> Vec<glip_rt::api::Detection> {
    library_with(|det| det.set_prompt(prompt))
}

fn library_with(
    set: impl FnOnce(&mut glip_rt::Detector) -> glip_rt::Result<()>,
) -> Vec<glip_rt::api::Detection> {
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let mut det = g
        .detector_builder(glip_rt::DeviceChoice::Cpu)
        .build()
        .unwrap();
    set(&mut det).unwrap();
    det.detect_file(&g.photo).unwrap()
}

const COCO_PROMPT_PREFIX: &str = "person. bicycle. car.";

#[test]
fn deepstack_endpoint_answers_as_deepstack() {
    let server = Server::start(&[]);
    // DeepStack's request: multipart `image`, `min_confidence`, an empty `api_key`.
    let a = post_form(
        &server.addr,
        "/v1/vision/detection",
        Some(&photo()),
        &[("api_key", ""), ("min_confidence", "0.5")],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = a.json();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["predictions", "success"]);
    assert_eq!(v["success"], true);
    // The server's default prompt is COCO's 80 names; the same detections as the library.
    let health = request(&server.addr, "GET", "/health", &[], b"").json();
    let prompt = health["prompt"].as_str().unwrap();
    assert!(prompt.starts_with(COCO_PROMPT_PREFIX), "{prompt}");
    let want: Vec<_> = library(prompt)
        .into_iter()
        .filter(|d| d.score >= 0.5)
        .collect();
    let got = v["predictions"].as_array().unwrap();
    assert!(
        !want.is_empty(),
        "the tiny model must give detections over 0.5 here"
    );
    assert_eq!(got.len(), want.len());
    for (p, d) in got.iter().zip(&want) {
        let mut k: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        assert_eq!(
            k,
            ["confidence", "label", "x_max", "x_min", "y_max", "y_min"]
        );
        assert_eq!(p["label"], d.phrase.as_str());
        assert_eq!(p["confidence"].as_f64().unwrap() as f32, d.score);
        for (key, val) in ["x_min", "y_min", "x_max", "y_max"].iter().zip(d.bbox) {
            // Whole pixels (DeepStack's integers).
            assert!(p[key].is_i64(), "{key}: {}", p[key]);
            assert!(
                (p[key].as_i64().unwrap() as f32 - val.round()).abs() <= 0.0,
                "{key}"
            );
        }
    }
    // min_confidence left out: the server's default (0.45).
    let a = post_form(&server.addr, "/v1/vision/detection", Some(&photo()), &[]);
    let n45 = library(prompt).iter().filter(|d| d.score >= 0.45).count();
    assert_eq!(a.json()["predictions"].as_array().unwrap().len(), n45);
}

#[test]
fn detect_endpoint_takes_a_prompt_per_request() {
    let server = Server::start(&[]);
    let want: Vec<_> = library("a cat. a remote.")
        .into_iter()
        .filter(|d| d.score >= 0.3)
        .collect();
    assert!(!want.is_empty());
    let check = |a: Answer| {
        assert_eq!(a.status, 200, "{}", a.text());
        let v = a.json();
        assert_eq!(v["prompt"], "a cat. a remote.");
        let got = v["detections"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{v}");
        for (g, d) in got.iter().zip(&want) {
            assert_eq!(g["phrase"], d.phrase.as_str());
            assert_eq!(g["label"], d.label);
            assert_eq!(g["score"].as_f64().unwrap() as f32, d.score);
            let b: Vec<f32> = g["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(b, d.bbox);
        }
    };
    // As a form, then as the raw body with the prompt in the query.
    check(post_form(
        &server.addr,
        "/v1/detect",
        Some(&photo()),
        &[("prompt", "a cat. a remote."), ("threshold", "0.3")],
    ));
    check(request(
        &server.addr,
        "POST",
        "/v1/detect?prompt=a%20cat.%20a%20remote.&threshold=0.3",
        &[("Content-Type", "image/png")],
        &photo(),
    ));
    // A caption with --phrases auto's rule.
    let a = post_form(
        &server.addr,
        "/v1/detect",
        Some(&photo()),
        &[
            ("prompt", "a cat sits on a remote"),
            ("phrases", "auto"),
            ("threshold", "0"),
        ],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let got: Vec<(String, u64)> = a.json()["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["phrase"].as_str().unwrap().to_string(),
                d["label"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> =
        library_with(|det| det.set_prompt_auto_phrases("a cat sits on a remote"))
            .into_iter()
            .map(|d| (d.phrase, d.label as u64))
            .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // No prompt: the server's default, whose text features are still cached.
    let a = post_form(&server.addr, "/v1/detect", Some(&photo()), &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.json()["prompt"]
        .as_str()
        .unwrap()
        .starts_with(COCO_PROMPT_PREFIX));
    // The page, health and metrics.
    let page = request(&server.addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"prompt\"") && page.text().contains("/v1/detect"));
    let m = request(&server.addr, "GET", "/metrics", &[], b"").text();
    for needle in [
        "glip_requests_total{route=\"/v1/detect\",status=\"200\"} 4",
        "glip_request_duration_seconds_count{route=\"/v1/detect\"} 4",
        "glip_queue_depth 0",
        "glip_queue_capacity 16",
        "glip_requests_in_flight 1",
        // Encoded by BERT: the default prompt at start, "a cat. a remote." (its second
        // request runs on with it), the caption; the default again is a cache hit.
        "glip_prompt_cache_misses_total 3",
        "glip_prompt_cache_hits_total 1",
    ] {
        assert!(m.contains(needle), "{needle} not in\n{m}");
    }
}

#[test]
fn bad_requests_get_a_clear_4xx_and_the_server_goes_on() {
    let server = Server::start(&[
        "--max-body-mib",
        "1",
        "--max-pixels",
        "50000",
        "--request-timeout",
        "2",
    ]);
    let addr = server.addr.as_str();
    let error = |a: &Answer| a.json()["error"].as_str().unwrap().to_string();
    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        (
            "not an image",
            post_form(
                addr,
                "/v1/vision/detection",
                Some(b"hello, not a picture"),
                &[],
            ),
            400,
            "not an image",
        ),
        (
            "no image",
            post_form(addr, "/v1/detect", None, &[("prompt", "a cat.")]),
            400,
            "no image",
        ),
        (
            "bad threshold",
            post_form(addr, "/v1/detect", Some(&photo()), &[("threshold", "2")]),
            400,
            "threshold",
        ),
        (
            "empty prompt",
            post_form(addr, "/v1/detect", Some(&photo()), &[("prompt", " . . ")]),
            400,
            "prompt",
        ),
        (
            "prompt over 64 KiB",
            post_form(
                addr,
                "/v1/detect",
                Some(&photo()),
                &[("prompt", &"cat. ".repeat(20_000))],
            ),
            413,
            "at most 65536",
        ),
        (
            "phrases without a prompt",
            post_form(addr, "/v1/detect", Some(&photo()), &[("phrases", "auto")]),
            400,
            "without the prompt",
        ),
        (
            "phrase not in caption",
            post_form(
                addr,
                "/v1/detect",
                Some(&photo()),
                &[("prompt", "a cat"), ("phrases", "dog")],
            ),
            400,
            "dog",
        ),
        (
            "body over --max-body-mib",
            post_form(addr, "/v1/detect", Some(&vec![7u8; 2 << 20]), &[]),
            413,
            "",
        ),
        (
            "image over --max-pixels",
            post_form(addr, "/v1/detect", Some(&png(300, 300)), &[]),
            413,
            "pixels",
        ),
        (
            "malformed multipart",
            request(
                addr,
                "POST",
                "/v1/vision/detection",
                &[("Content-Type", "multipart/form-data; boundary=zzz")],
                b"--zzz\r\nno headers here",
            ),
            400,
            "",
        ),
    ];
    for (what, a, status, needle) in cases {
        assert_eq!(a.status, status, "{what}: {}", a.text());
        assert!(error(&a).contains(needle), "{what}: {}", error(&a));
    }
    assert_eq!(request(addr, "GET", "/nowhere", &[], b"").status, 404);
    // A truncated upload: the length promised, half sent, the connection half-closed.
    let mut s = connect(addr);
    let body = multipart(Some(&photo()), &[]);
    let head = format!(
        "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..body.len() / 2]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // A slow upload: the head, then nothing past --request-timeout.
    let mut s = connect(addr);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..100]).unwrap();
    let a = read_answer(s);
    assert_eq!(a.status, 408, "{}", a.text());
    // Still serving (an image under the limit).
    let a = post_form(addr, "/v1/vision/detection", Some(&png(200, 200)), &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    let m = request(addr, "GET", "/metrics", &[], b"").text();
    for kind in [
        "bad_image",
        "bad_request",
        "bad_prompt",
        "too_large",
        "timeout",
    ] {
        assert!(
            m.contains(&format!("glip_errors_total{{kind=\"{kind}\"}}")),
            "{kind}:\n{m}"
        );
    }
}

/// A valid PNG of one colour (300×300 is over the 50,000-pixel limit of the test above).
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([90, 120, 200]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn api_key_is_required_when_set() {
    let server = Server::start(&["--api-key", "s3cret"]);
    let addr = server.addr.as_str();
    let img = photo();
    for (fields, status) in [
        (&[][..], 401),
        (&[("api_key", "wrong")][..], 401),
        (&[("api_key", "s3cret")][..], 200),
    ] {
        let a = post_form(addr, "/v1/vision/detection", Some(&img), fields);
        assert_eq!(a.status, status, "{fields:?}: {}", a.text());
    }
    // An empty api_key field (what DeepStack's clients send when not configured) leaves
    // the bearer header to decide.
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let a = request(
        addr,
        "POST",
        "/v1/vision/detection",
        &[("Content-Type", &ct), ("Authorization", "Bearer s3cret")],
        &multipart(Some(&img), &[("api_key", "")]),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let a = request(
        addr,
        "POST",
        "/v1/detect?prompt=a%20cat.",
        &[("Authorization", "Bearer s3cret")],
        &img,
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let a = request(
        addr,
        "POST",
        "/v1/detect",
        &[("Authorization", "Bearer no")],
        &img,
    );
    assert_eq!(a.status, 401);
    assert!(a.json()["error"].as_str().unwrap().contains("API key"));
    // Health and metrics stay open (for probes and Prometheus).
    assert_eq!(request(addr, "GET", "/health", &[], b"").status, 200);
}

/// Fires `n` requests at once; returns each one's status, latency (s), Retry-After and
/// body.
fn burst(addr: &str, n: usize) -> Vec<(u16, f64, Option<String>, Vec<u8>)> {
    let img = photo();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let img = &img;
                s.spawn(move || {
                    let t = Instant::now();
                    let a = post_form(addr, "/v1/vision/detection", Some(img), &[]);
                    let retry = a.header("retry-after").map(str::to_string);
                    (a.status, t.elapsed().as_secs_f64(), retry, a.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn overload_is_answered_503_with_retry_after() {
    let server = Server::start(&["--queue", "1", "--workers", "1"]);
    let results: Vec<(u16, f64, Option<String>)> = burst(&server.addr, 12)
        .into_iter()
        .map(|(status, t, retry, _)| (status, t, retry))
        .collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(ok + busy.len(), results.len(), "{results:?}");
    assert!(ok >= 1 && !busy.is_empty(), "{results:?}");
    assert!(
        busy.iter().all(|r| r.2.as_deref() == Some("1")),
        "{results:?}"
    );
    assert_eq!(
        request(&server.addr, "GET", "/health", &[], b"").status,
        200
    );
}

/// Two DeepStack answers with the same predictions in the same order: labels and pixel
/// boxes equal, confidences within 1e-5 (a batch sums in another order than one image).
fn same_predictions(a: &[u8], b: &[u8]) {
    let (a, b): (Value, Value) = (
        serde_json::from_slice(a).unwrap(),
        serde_json::from_slice(b).unwrap(),
    );
    let (pa, pb) = (
        a["predictions"].as_array().unwrap(),
        b["predictions"].as_array().unwrap(),
    );
    assert_eq!(pa.len(), pb.len());
    let mut worst = 0f64;
    for (x, y) in pa.iter().zip(pb) {
        for k in ["label", "x_min", "y_min", "x_max", "y_max"] {
            assert_eq!(x[k], y[k], "{k}: {x} vs {y}");
        }
        worst = worst
            .max((x["confidence"].as_f64().unwrap() - y["confidence"].as_f64().unwrap()).abs());
    }
    assert!(worst <= 1e-5, "confidences differ by {worst}");
}

#[test]
fn concurrent_clients_without_errors_and_memory_flat() {
    // One malloc arena: resident memory then follows what is held, not which thread freed.
    let server = Server::start_env(
        &["--queue", "64", "--workers", "2", "--batch", "4"],
        &[("MALLOC_ARENA_MAX", "1")],
    );
    let addr = server.addr.clone();
    // Resident memory less the freed blocks the host block cache keeps for reuse (bounded by
    // its cap, checked here): what the server holds. A leak grows it; the cache filling up
    // with the blocks of one more batch size does not.
    let held_kb = || {
        let m = request(&addr, "GET", "/metrics", &[], b"").text();
        let gauge = |name: &str| -> u64 {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} not in\n{m}"))
        };
        let (cache, cap) = (
            gauge("glip_host_block_cache_bytes"),
            gauge("glip_host_block_cache_capacity_bytes"),
        );
        assert!(cache <= cap, "the block cache holds {cache} of {cap} bytes");
        let rss = rss_kb(server.pid()).unwrap();
        (rss.saturating_sub(cache / 1024), rss, cache / 1024)
    };
    // Warm-up (every batch size 1 to 4 planned once), then rounds of 8 concurrent clients.
    let single = post_form(&addr, "/v1/vision/detection", Some(&photo()), &[]);
    assert_eq!(single.status, 200);
    let mut before = 0;
    for _ in 0..4 {
        burst(&addr, 8);
        before = before.max(held_kb().0);
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut rounds = 0;
    let mut after = 0;
    while start.elapsed() < Duration::from_secs(6) || rounds < 3 {
        for (status, t, _, body) in burst(&addr, 8) {
            assert_eq!(status, 200);
            // Batched or not, every answer is the single-image answer.
            same_predictions(&body, &single.body);
            lat.push(t);
        }
        rounds += 1;
        let (held, rss, cache) = held_kb();
        eprintln!("round {rounds}: RSS {rss} kB, of which {cache} kB in the block cache");
        after = held;
    }
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize] * 1e3;
    let growth = (after as f64 - before as f64) / before as f64;
    eprintln!(
        "{} requests by 8 clients in {:.1} s: {:.1} requests/s, p50 {:.0} ms, p99 {:.0} ms, 0 errors; RSS less block cache {before} → {after} kB ({:+.2} %)",
        lat.len(),
        start.elapsed().as_secs_f64(),
        lat.len() as f64 / start.elapsed().as_secs_f64(),
        p(0.5),
        p(0.99),
        growth * 100.0
    );
    assert!(
        growth < 0.10,
        "resident memory (less the block cache) grew {:.1} %",
        growth * 100.0
    );
    // Requests were run in batches (fewer forwards than requests).
    let m = request(&addr, "GET", "/metrics", &[], b"").text();
    let count = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{m}"))
    };
    let (forwards, images) = (
        count("glip_forwards_total "),
        count("glip_forward_images_total "),
    );
    eprintln!("{images} requests in {forwards} forwards");
    assert_eq!(images as usize, lat.len() + 33);
    assert!(forwards < images, "no request was batched");
}

#[test]
fn sigterm_finishes_the_requests_in_flight() {
    let mut server = Server::start(&["--workers", "1"]);
    // A request in flight at SIGTERM: its upload half sent before, the rest after.
    let body = multipart(Some(&photo()), &[]);
    let mut s = connect(&server.addr);
    let head = format!(
        "POST /v1/vision/detection HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&body[body.len() / 2..]).unwrap();
    let a = read_answer(s);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["success"], true);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("stopped"), "{log:?}");
}

/// A WebDriver session on chromedriver (W3C protocol, JSON over HTTP).
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    /// chromedriver's and Chromium's temporary files (profile, crash reports): removed last.
    _tmp: glip_rt::testing::TempDir,
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Browser {
        for tool in ["chromium", "chromedriver"] {
            let found = Command::new(tool).arg("--version").output().is_ok();
            assert!(
                found,
                "{tool} is not installed: run scripts/install-chromium.sh"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tmp = glip_rt::testing::TempDir::new("glip-serve-chromium");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .env("HOME", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut b = Browser {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&b.addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1000"]
            }
        }}});
        let v = b.call("POST", "/session", caps);
        b.session = v["sessionId"].as_str().expect("a session").to_string();
        b
    }

    /// One command; its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = body.to_string();
        let a = request(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        let v = a.json();
        assert_eq!(a.status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn cmd(&self, method: &str, what: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{what}", self.session), body)
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            serde_json::json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT_KEY].as_str().unwrap().to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/clear"),
            serde_json::json!({}),
        );
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            serde_json::json!({"text": text}),
        );
    }

    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": js, "args": []}),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The page's colour of a label (`hsl(label·137.5 mod 360, 85 %, 45 %)`) as RGB.
fn page_colour(label: u32) -> [f64; 3] {
    let (h, s, l): (f64, f64, f64) = ((label as f64 * 137.5) % 360.0, 0.85, 0.45);
    let a = s * l.min(1.0 - l);
    let f = |n: f64| {
        let k = (n + h / 30.0) % 12.0;
        255.0 * (l - a * (k - 3.0).min(9.0 - k).clamp(-1.0, 1.0))
    };
    [f(0.0), f(8.0), f(4.0)]
}

/// The page at `/` in a real headless Chromium: pick the photo, type a prompt and a
/// threshold, click Detect; the JSON shown equals the library's detections and each box is
/// drawn on the canvas in its phrase's colour.
#[test]
fn page_in_headless_chromium() {
    let server = Server::start(&[]);
    let browser = Browser::start();
    let photo = E2eGolden::load("12_e2e_tiny").unwrap().photo;
    browser.cmd(
        "POST",
        "/url",
        serde_json::json!({"url": format!("http://{}/", server.addr)}),
    );
    let file = browser.element("#file");
    browser.cmd(
        "POST",
        &format!("/element/{file}/value"),
        serde_json::json!({"text": photo.to_str().unwrap()}),
    );
    browser.type_into("#prompt", "a cat. a remote.");
    browser.type_into("#threshold", "0.3");
    let go = browser.element("#go");
    browser.cmd(
        "POST",
        &format!("/element/{go}/click"),
        serde_json::json!({}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let v = browser.script("return document.body.dataset.detections || null;");
        if let Some(n) = v.as_str() {
            break n.parse::<usize>().unwrap();
        }
        let status = browser.script("return document.getElementById('status').textContent;");
        assert!(
            Instant::now() < deadline,
            "no result drawn; status {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let want: Vec<_> = library("a cat. a remote.")
        .into_iter()
        .filter(|d| d.score >= 0.3)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(shown, want.len());
    let json: Value = serde_json::from_str(
        browser
            .script("return document.getElementById('json').textContent;")
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let got = json["detections"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, d) in got.iter().zip(&want) {
        assert_eq!(g["phrase"], d.phrase.as_str());
        assert_eq!(g["score"].as_f64().unwrap() as f32, d.score);
    }
    // The canvas: the photo's size, and the last box drawn (on top of the others) has its
    // left edge in its label's colour halfway down.
    let last = want.last().unwrap();
    let [x1, y1, _, y2] = last.bbox;
    let js = format!(
        "const c = document.getElementById('canvas'); const g = c.getContext('2d');
         const y = Math.round({ym});
         const px = []; for (let x = Math.floor({x1}) - 2; x <= Math.ceil({x1}) + 2; x++) {{
           px.push(Array.from(g.getImageData(x, y, 1, 1).data)); }}
         return [c.width, c.height, px];",
        ym = (y1 + y2) / 2.0,
        x1 = x1
    );
    let v = browser.script(&js);
    let img = image::open(&photo).unwrap();
    assert_eq!(v[0].as_u64().unwrap(), img.width() as u64);
    assert_eq!(v[1].as_u64().unwrap(), img.height() as u64);
    let want_rgb = page_colour(last.label);
    let near = v[2]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| (0..3).all(|i| (p[i].as_f64().unwrap() - want_rgb[i]).abs() <= 3.0));
    assert!(
        near,
        "no pixel of colour {want_rgb:?} at the box's edge: {}",
        v[2]
    );
}

/// `phrase_thresholds` (a JSON object) keeps each named phrase's detections from its own
/// threshold on, the others from the request's: the answer is the library's detections
/// filtered so, on both routes. A phrase not in the prompt, a bad value or bad JSON is a 400.
#[test]
fn phrase_thresholds_per_request() {
    let server = Server::start(&["--prompt", "a cat. a remote."]);
    let all = library("a cat. a remote.");
    let pairs: Vec<_> = all.iter().map(|d| (d.phrase.clone(), d.score)).collect();
    let (target, global, own) = glip_rt::testing::phrase_threshold_case(&pairs).unwrap();
    let want: Vec<_> = all
        .iter()
        .filter(|d| d.score >= if d.phrase == target { own } else { global })
        .collect();
    assert!(
        want.len() < all.len() && want.len() > all.iter().filter(|d| d.score >= global).count()
    );
    let per = serde_json::json!({ target.as_str(): own }).to_string();
    let global_text = global.to_string();
    let a = post_form(
        &server.addr,
        "/v1/detect",
        Some(&photo()),
        &[("threshold", &global_text), ("phrase_thresholds", &per)],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    let got: Vec<(String, u32, f32)> = v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let (p, l, s) = (&d["phrase"], &d["label"], &d["score"]);
            (
                p.as_str().unwrap().into(),
                l.as_u64().unwrap() as u32,
                s.as_f64().unwrap() as f32,
            )
        })
        .collect();
    let expect: Vec<(String, u32, f32)> = want
        .iter()
        .map(|d| (d.phrase.clone(), d.label, d.score))
        .collect();
    assert_eq!(got, expect);
    assert_eq!(
        v["phrase_thresholds"][target.as_str()].as_f64().unwrap() as f32,
        own
    );
    // DeepStack's route with the server's prompt: the same detections.
    let a = post_form(
        &server.addr,
        "/v1/vision/detection",
        Some(&photo()),
        &[
            ("min_confidence", &global_text),
            ("phrase_thresholds", &per),
        ],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let labels: Vec<String> = a.json()["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        labels,
        want.iter().map(|d| d.phrase.clone()).collect::<Vec<_>>()
    );
    for (bad, needle) in [
        (
            r#"{"a dog": 0.5}"#,
            "\"a dog\" is not a phrase of the prompt",
        ),
        (r#"{"a cat": 2}"#, "not a number in [0, 1]"),
        (r#"{"a cat": "high"}"#, "not a number in [0, 1]"),
        ("a cat=0.5", "must be a JSON object"),
    ] {
        let a = post_form(
            &server.addr,
            "/v1/detect",
            Some(&photo()),
            &[("phrase_thresholds", bad)],
        );
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
        let e = a.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    let a = post_form(&server.addr, "/v1/detect", Some(&photo()), &[]);
    assert_eq!(a.status, 200, "the server goes on: {}", a.text());
}

/// The REQ side of ZeroMQ (ZMTP 3.0, NULL mechanism), written here from the spec
/// (rfc.zeromq.org/spec/23) as Frigate's `zmq` detector speaks it through libzmq.
struct ZmqReq(std::os::unix::net::UnixStream);

impl ZmqReq {
    fn connect(path: &std::path::Path) -> ZmqReq {
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut g = [0u8; 64];
        g[0] = 0xFF;
        g[9] = 0x7F;
        g[10] = 3;
        g[12..16].copy_from_slice(b"NULL");
        s.write_all(&g).unwrap();
        let mut theirs = [0u8; 64];
        s.read_exact(&mut theirs).unwrap();
        assert_eq!(
            (theirs[0], theirs[10], &theirs[12..16]),
            (0xFF, 3, &b"NULL"[..])
        );
        let ready = b"\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ";
        s.write_all(&[0x04, ready.len() as u8]).unwrap();
        s.write_all(ready).unwrap();
        let mut r = ZmqReq(s);
        let (flags, body) = r.frame();
        assert_eq!(flags & 0x04, 0x04, "a command first");
        assert!(body.starts_with(b"\x05READY"), "{body:?}");
        assert!(body.ends_with(b"\x03REP"), "{body:?}");
        r
    }

    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut f = [0u8; 1];
        self.0.read_exact(&mut f).unwrap();
        let len = if f[0] & 0x02 != 0 {
            let mut l = [0u8; 8];
            self.0.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        } else {
            let mut l = [0u8; 1];
            self.0.read_exact(&mut l).unwrap();
            l[0] as usize
        };
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        (f[0], body)
    }

    /// Sends [delimiter, frames…] and returns the reply's frames after its delimiter.
    fn call(&mut self, frames: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut msg = vec![0x01, 0];
        for (i, f) in frames.iter().enumerate() {
            let more = u8::from(i + 1 < frames.len());
            msg.push(more | 0x02);
            msg.extend_from_slice(&(f.len() as u64).to_be_bytes());
            msg.extend_from_slice(f);
        }
        self.0.write_all(&msg).unwrap();
        let mut out = Vec::new();
        loop {
            let (flags, body) = self.frame();
            out.push(body);
            if flags & 0x01 == 0 {
                break;
            }
        }
        assert!(out[0].is_empty(), "the reply starts with the delimiter");
        out.split_off(1)
    }
}

/// Frigate's detection array from a reply: its header (checked) and 20 rows of 6.
fn frigate_rows(reply: &[Vec<u8>]) -> (Value, Vec<[f32; 6]>) {
    assert_eq!(reply.len(), 2, "header and tensor");
    let head: Value = serde_json::from_slice(&reply[0]).unwrap();
    assert_eq!(head["shape"], serde_json::json!([20, 6]));
    assert_eq!(head["dtype"], "float32");
    assert_eq!(reply[1].len(), 20 * 6 * 4);
    let v: Vec<f32> = reply[1]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let rows = v.chunks_exact(6).map(|r| r.try_into().unwrap()).collect();
    (head, rows)
}

/// `--zmq ipc://PATH` answers Frigate's zmq detector: [header, uint8 tensor] (NHWC or NCHW)
/// → 20 rows [class, score, y_min, x_min, y_max, x_max] relative to the image, best first,
/// under --default-threshold left out, the rest zero; class = the phrase's line in
/// /v1/labelmap. Equal to the library's detections of the same pixels. A bad request gets
/// zero rows and an "error" in the header on a connection that goes on; a frame declaring
/// 2^64 bytes closes its connection, not the server.
#[test]
fn zmq_endpoint_answers_as_frigates_detector() {
    let prompt = "a cat. a remote. a couch.";
    let all = library(prompt);
    let threshold =
        glip_rt::testing::median(all.iter().map(|d| f64::from(d.score)).collect()) as f32;
    let tmp = glip_rt::testing::TempDir::new("glip-serve-zmq");
    let sock = tmp.join("zmq_detector");
    let endpoint = format!("ipc://{}", sock.display());
    let t = threshold.to_string();
    let server = Server::start(&[
        "--prompt",
        prompt,
        "--default-threshold",
        &t,
        "--zmq",
        &endpoint,
    ]);
    let labelmap = request(&server.addr, "GET", "/v1/labelmap", &[], b"").text();
    assert_eq!(labelmap, "0 a cat\n1 a remote\n2 a couch\n");
    let class = |phrase: &str| {
        labelmap
            .lines()
            .find_map(|l| l.split_once(' ').filter(|(_, p)| *p == phrase))
            .map(|(i, _)| i.parse::<f32>().unwrap())
            .unwrap()
    };
    let img = glip_rt::preprocess::load_image(&E2eGolden::load("12_e2e_tiny").unwrap().photo, true)
        .unwrap();
    let (w, h) = (img.width as f32, img.height as f32);
    let mut want: Vec<_> = all.iter().filter(|d| d.score >= threshold).collect();
    want.sort_by(|a, b| b.score.total_cmp(&a.score));
    want.truncate(20);
    assert!(!want.is_empty() && want.len() < all.len());

    let mut req = ZmqReq::connect(&sock);
    let nhwc = serde_json::json!({"shape": [1, img.height, img.width, 3], "dtype": "uint8", "model_type": "ssd"});
    let planes: Vec<u8> = (0..3)
        .flat_map(|c| img.data.iter().skip(c).step_by(3).copied())
        .collect();
    let nchw = serde_json::json!({"shape": [1, 3, img.height, img.width], "dtype": "uint8"});
    let check = |rows: &[[f32; 6]]| {
        assert_eq!(rows.len(), 20);
        for (i, row) in rows.iter().enumerate() {
            let Some(d) = want.get(i) else {
                assert_eq!(row, &[0.0; 6], "row {i} unused");
                continue;
            };
            assert_eq!(row[0], class(&d.phrase), "row {i}");
            assert_eq!(row[1], d.score, "row {i}");
            let rel = [d.bbox[1] / h, d.bbox[0] / w, d.bbox[3] / h, d.bbox[2] / w];
            for k in 0..4 {
                assert!(
                    (row[2 + k] - rel[k].clamp(0.0, 1.0)).abs() < 1e-6,
                    "row {i}: {row:?}"
                );
            }
        }
    };
    for (head, tensor) in [(nhwc, &img.data), (nchw, &planes)] {
        let (got_head, rows) = frigate_rows(&req.call(&[head.to_string().as_bytes(), tensor]));
        assert!(got_head.get("error").is_none(), "{got_head}");
        check(&rows);
    }
    // Through libzmq (pyzmq), as Frigate's detector sends it.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pyzmq = root.join(".pyzmq");
    let interop = pyzmq.join("zmq").is_dir();
    if interop {
        let rgb = tmp.join("photo.rgb");
        std::fs::write(&rgb, &img.data).unwrap();
        let out = Command::new("python3")
            .arg(root.join("tests/zmq/frigate_client.py"))
            .arg(&endpoint)
            .arg(&rgb)
            .args([
                img.height.to_string(),
                img.width.to_string(),
                "60000".into(),
            ])
            .env("PYTHONPATH", &pyzmq)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["header"].get("error").is_none(), "{v}");
        let rows: Vec<[f32; 6]> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let r: Vec<f32> = r
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                r.try_into().unwrap()
            })
            .collect();
        check(&rows);
    } else {
        assert!(
            std::env::var_os("GLIP_REQUIRE_PYZMQ").is_none(),
            "GLIP_REQUIRE_PYZMQ is set but .pyzmq/ is missing: run scripts/install-pyzmq.sh"
        );
        eprintln!("libzmq interop skipped: no .pyzmq/ (scripts/install-pyzmq.sh installs it)");
    }
    // Bad requests: zero rows, the reason in the header, and the connection goes on.
    for (frames, needle) in [
        (
            vec![
                b"{\"shape\": [1, 4, 4, 3], \"dtype\": \"uint8\"}".to_vec(),
                vec![0u8; 47],
            ],
            "needs 48 bytes",
        ),
        (
            vec![
                b"{\"shape\": [1, 4, 4, 3], \"dtype\": \"float32\"}".to_vec(),
                vec![0u8; 192],
            ],
            "must be uint8",
        ),
        (
            vec![
                b"{\"shape\": [2, 4, 4, 3], \"dtype\": \"uint8\"}".to_vec(),
                vec![0u8; 96],
            ],
            "one image",
        ),
        (
            vec![
                b"{\"shape\": [1, 100000, 100000, 3], \"dtype\": \"uint8\"}".to_vec(),
                vec![],
            ],
            "at most",
        ),
        (vec![b"not json".to_vec(), vec![]], "not JSON"),
        (vec![b"{}".to_vec()], "two frames"),
    ] {
        let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let (head, rows) = frigate_rows(&req.call(&parts));
        let e = head["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {head}"));
        assert!(e.contains(needle), "{e}");
        assert!(rows.iter().all(|r| r == &[0.0; 6]));
    }
    // A frame of 2^64 - 1 bytes closes that connection; a new one is served.
    let mut hostile = ZmqReq::connect(&sock);
    hostile.0.write_all(&[0x03]).unwrap();
    hostile.0.write_all(&u64::MAX.to_be_bytes()).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(hostile.0.read(&mut byte), Ok(0) | Err(_)),
        "closed"
    );
    let head = serde_json::json!({"shape": [img.height, img.width, 3], "dtype": "uint8"});
    let (_, rows) =
        frigate_rows(&ZmqReq::connect(&sock).call(&[head.to_string().as_bytes(), &img.data]));
    assert_eq!(rows[0][1], want[0].score);
    let m = request(&server.addr, "GET", "/metrics", &[], b"").text();
    let served = 3 + usize::from(interop);
    let line = format!("glip_requests_total{{route=\"zmq\",status=\"200\"}} {served}");
    assert!(m.contains(&line), "{m}");
    assert!(
        m.contains("glip_requests_total{route=\"zmq\",status=\"400\"} 6"),
        "{m}"
    );
    // SIGTERM with a connection open: the server exits 0 and removes its socket file.
    let mut server = server;
    server.terminate();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed");
    drop(req);
}

/// A --zmq endpoint that cannot be served stops the server at start with a message naming
/// it (exit 1; a malformed one is a usage error, exit 2), never a panic.
#[test]
fn bad_zmq_endpoints_are_clear_errors() {
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let tmp = glip_rt::testing::TempDir::new("glip-serve-zmq-bad");
    let file = tmp.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let in_the_way = format!("ipc://{}", file.display());
    let no_dir = format!("ipc://{}", tmp.join("no-such-dir/sock").display());
    for (ep, code, needle) in [
        ("foo://x", 2, "ipc://PATH or tcp://HOST:PORT"),
        ("ipc://", 2, "names no path"),
        (no_dir.as_str(), 1, "no-such-dir"),
        (in_the_way.as_str(), 1, "not a socket is in the way"),
        ("tcp://256.1.1.1:5", 1, "tcp://256.1.1.1:5"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_glip"))
            .arg("serve")
            .args(g.model_args())
            .args(["--device", "cpu", "--bind", "127.0.0.1:0", "--zmq", ep])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{ep}: {err}");
        assert!(err.contains(needle), "{ep}: {err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
