//! `glip stream`: frames on stdin → one JSON line per frame; a bad frame gets an error line
//! and the stream goes on.

use glip_rt::preprocess::load_image;
use glip_rt::testing::{testdata, E2eGolden};
use std::io::Write;
use std::process::{Command, Stdio};

/// The tiny golden every test here uses unless it loops over all of them.
fn tiny() -> E2eGolden {
    E2eGolden::load("12_e2e_tiny").unwrap()
}

fn run(g: &E2eGolden, args: &[&str], stdin: Vec<u8>) -> (bool, Vec<serde_json::Value>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glip"))
        .arg("stream")
        .arg("--config")
        .arg(&g.config)
        .arg("--weights")
        .arg(&g.weights)
        .arg("--bert-config")
        .arg(testdata().join("tiny_bert_config.json"))
        .args(["--device", "cpu", "--prompt", &g.caption])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn raw_frames_give_one_line_each() {
    for g in E2eGolden::all().unwrap() {
        let img = load_image(&g.photo, true).unwrap();
        let (w, h) = (img.width.to_string(), img.height.to_string());
        let size = ["--input", "raw", "--width", &w, "--height", &h];
        let mut input = img.data.clone();
        input.extend_from_slice(&img.data);
        let (ok, lines, err) = run(&g, &size, input.clone());
        assert!(ok, "{err}");
        assert_eq!(lines.len(), 2);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["frame"], i as u64);
            assert_eq!(
                l["detections"].as_array().unwrap().len(),
                g.num_final,
                "{}: the golden photo gives the golden's count",
                g.name
            );
        }
        // A stream cut inside the third frame: two results, then an error line for frame 2.
        input.extend_from_slice(&img.data[..1000]);
        let (ok, lines, err) = run(&g, &size, input);
        assert!(!ok && !err.contains("panicked"), "{err}");
        assert_eq!(lines.len(), 3);
        assert!(
            lines[2]["error"]
                .as_str()
                .unwrap()
                .contains("ended inside a frame"),
            "{}",
            lines[2]
        );
    }
}

#[test]
fn encoded_frames_survive_a_bad_one() {
    let g = tiny();
    let png = std::fs::read(&g.photo).unwrap();
    let mut input = Vec::new();
    for f in [
        png.as_slice(),
        b"definitely not an image".as_slice(),
        png.as_slice(),
    ] {
        input.extend_from_slice(&(f.len() as u32).to_le_bytes());
        input.extend_from_slice(f);
    }
    let (ok, lines, err) = run(&g, &["--input", "encoded"], input);
    assert!(!ok, "a bad frame makes the exit code non-zero");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(lines.len(), 3, "every frame gets a line");
    assert_eq!(
        lines[0]["detections"].as_array().unwrap().len(),
        g.num_final
    );
    assert!(lines[1]["error"].is_string(), "{}", lines[1]);
    assert_eq!(
        lines[2]["detections"].as_array().unwrap().len(),
        g.num_final,
        "the stream goes on after a bad frame"
    );
}

#[test]
fn raw_input_needs_a_frame_size() {
    let (ok, lines, err) = run(&tiny(), &["--input", "raw"], Vec::new());
    assert!(!ok && lines.is_empty());
    assert!(err.contains("--width"), "{err}");
}

#[test]
fn every_pixel_format_reaches_the_model_as_its_rgb() {
    use glip_rt::pixfmt::PixFmt;
    let g = tiny();
    let img = load_image(&g.photo, true).unwrap();
    let (w, h) = (img.width, img.height);
    let (ws, hs) = (w.to_string(), h.to_string());
    let stream = |fmt: &str, frame: Vec<u8>| {
        let args = [
            "--input",
            "raw",
            "--width",
            &ws,
            "--height",
            &hs,
            "--pix-fmt",
            fmt,
        ];
        let (ok, lines, err) = run(&g, &args, frame);
        assert!(ok && lines.len() == 1, "{fmt}: {err}");
        lines[0]["detections"].clone()
    };
    let want = stream("rgb24", img.data.clone());
    assert_eq!(want.as_array().unwrap().len(), g.num_final);
    let px = |f: fn(&[u8]) -> Vec<u8>| -> Vec<u8> { img.data.chunks(3).flat_map(f).collect() };
    for (fmt, frame) in [
        ("bgr24", px(|p| vec![p[2], p[1], p[0]])),
        ("rgba", px(|p| vec![p[0], p[1], p[2], 255])),
        ("bgra", px(|p| vec![p[2], p[1], p[0], 0])),
    ] {
        assert_eq!(
            stream(fmt, frame),
            want,
            "{fmt}: other detections than rgb24"
        );
    }
    // Luma-only and YUV frames: the same detections as their own RGB (PixFmt::to_rgb's
    // unit tests check that conversion) sent as rgb24.
    let yuv: Vec<u8> = (0..PixFmt::Yuv420p.frame_bytes(w, h).unwrap())
        .map(|i| (i * 7 % 200 + 20) as u8)
        .collect();
    let gray = img.data.chunks(3).map(|p| p[1]).collect::<Vec<u8>>();
    for (f, frame) in [
        (PixFmt::Gray, gray),
        (PixFmt::Yuv420p, yuv.clone()),
        (PixFmt::Nv12, yuv),
    ] {
        let rgb = f.to_rgb(w, h, &frame).unwrap().data;
        assert_eq!(stream(f.name(), frame), stream("rgb24", rgb), "{f:?}");
    }
    // A frame one byte short at the end of input is an error line for that frame.
    let mut two = img.data.clone();
    two.extend_from_slice(&img.data[..img.data.len() - 1]);
    let (ok, lines, err) = run(
        &g,
        &["--input", "raw", "--width", &ws, "--height", &hs],
        two,
    );
    assert!(
        !ok && lines.len() == 2 && lines[1]["error"].is_string(),
        "{err}"
    );
    // Encoded frames carry their format; an unknown format is refused by name.
    let (ok, _, err) = run(&g, &["--input", "encoded", "--pix-fmt", "nv12"], Vec::new());
    assert!(!ok && err.contains("--input raw only"), "{err}");
    let args = [
        "--input",
        "raw",
        "--width",
        "4",
        "--height",
        "4",
        "--pix-fmt",
        "yuyv422",
    ];
    let (ok, _, err) = run(&g, &args, Vec::new());
    assert!(
        !ok && err.contains("unknown pixel format `yuyv422`"),
        "{err}"
    );
}

#[test]
fn y4m_streams_give_timed_lines() {
    use glip_rt::pixfmt::PixFmt;
    let g = tiny();
    let img = load_image(&g.photo, true).unwrap();
    let (w, h) = (img.width, img.height);
    let yuv: Vec<u8> = (0..PixFmt::Yuv420p.frame_bytes(w, h).unwrap())
        .map(|i| (i * 11 % 200 + 20) as u8)
        .collect();
    let header = format!("YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n");
    let mut input = header.clone().into_bytes();
    for marker in ["FRAME\n", "FRAME Ixyz\n"] {
        input.extend_from_slice(marker.as_bytes());
        input.extend_from_slice(&yuv);
    }
    let (ok, lines, err) = run(&g, &["--input", "y4m"], input.clone());
    assert!(ok && lines.len() == 2, "{err}");
    // The throughput line at the end, on stderr.
    let done = err
        .lines()
        .find(|l| l.contains("stream done: "))
        .unwrap_or_else(|| panic!("no throughput line:\n{err}"));
    assert!(
        done.contains("2 frames (0 with errors)") && done.contains("frames/s, latency p50 "),
        "{done}"
    );
    let (ok, _, err) = run(&g, &["--input", "y4m", "--stats-every=-1"], Vec::new());
    assert!(!ok && err.contains("--stats-every -1"), "{err}");
    // The same detections as the frame's RGB sent raw; the time from the header's rate.
    let rgb = PixFmt::Yuv420p.to_rgb(w, h, &yuv).unwrap().data;
    let (ws, hs) = (w.to_string(), h.to_string());
    let raw = ["--input", "raw", "--width", &ws, "--height", &hs];
    let (_, want, _) = run(&g, &raw, rgb);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["detections"], want[0]["detections"], "frame {i}");
        assert_eq!(l["time"].as_f64(), Some(i as f64 / 25.0), "{l}");
    }
    // A line that is not a FRAME line: an error line for that frame, and the stream ends
    // (where the next frame starts is unknown), with what was produced kept.
    input.extend_from_slice(b"FRAMX\n");
    input.extend_from_slice(&yuv);
    let (ok, lines, err) = run(&g, &["--input", "y4m"], input);
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[2]["error"]
            .as_str()
            .unwrap()
            .contains("expected a FRAME line"),
        "{}",
        lines[2]
    );
    // A bad header is the command's error, named; raw-only flags are refused.
    let (ok, lines, err) = run(&g, &["--input", "y4m"], b"YUV4MPEG2 W4 H4 C444\n".to_vec());
    assert!(!ok && lines.is_empty() && err.contains("C444"), "{err}");
    let (ok, _, err) = run(&g, &["--input", "y4m", "--width", "4"], header.into_bytes());
    assert!(!ok && err.contains("--input raw only"), "{err}");
}

#[test]
fn batched_frames_give_the_single_frames_lines() {
    let g = tiny();
    let img = load_image(&g.photo, true).unwrap();
    let (ws, hs) = (img.width.to_string(), img.height.to_string());
    // Three good frames and a bad one in the middle (a wrong-size encoded frame is not
    // possible raw; a flipped photo gives other detections, so order mistakes show).
    let flipped: Vec<u8> = img
        .data
        .chunks(3 * img.width)
        .rev()
        .flatten()
        .copied()
        .collect();
    let mut input = Vec::new();
    for f in [&img.data, &flipped, &img.data] {
        input.extend_from_slice(f);
    }
    input.extend_from_slice(&img.data[..100]);
    let raw = ["--input", "raw", "--width", &ws, "--height", &hs];
    let (_, one, _) = run(&g, &raw, input.clone());
    assert_eq!(one.len(), 4);
    assert_ne!(one[0]["detections"], one[1]["detections"]);
    for batch in ["2", "3", "16"] {
        let mut args = raw.to_vec();
        args.extend(["--batch", batch]);
        let (ok, lines, err) = run(&g, &args, input.clone());
        assert!(!ok && !err.contains("panicked"), "{err}");
        // The same lines in the same order; a batched forward sums in another order, so
        // scores and boxes agree to float rounding, not bit for bit.
        assert_eq!(lines.len(), one.len(), "--batch {batch}");
        for (l, o) in lines.iter().zip(&one) {
            assert_eq!(l["frame"], o["frame"], "--batch {batch}");
            assert_eq!(l["error"], o["error"], "--batch {batch}");
            let (a, b) = (&l["detections"], &o["detections"]);
            assert_eq!(a.is_array(), b.is_array());
            let (a, b) = (
                a.as_array().cloned().unwrap_or_default(),
                b.as_array().cloned().unwrap_or_default(),
            );
            assert_eq!(a.len(), b.len(), "--batch {batch} frame {}", o["frame"]);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x["label"], y["label"], "--batch {batch}");
                let close = |u: &serde_json::Value, v: &serde_json::Value, tol: f64| {
                    (u.as_f64().unwrap() - v.as_f64().unwrap()).abs() <= tol
                };
                assert!(
                    close(&x["score"], &y["score"], 1e-4),
                    "--batch {batch}: {x} vs {y}"
                );
                for k in 0..4 {
                    assert!(
                        close(&x["bbox"][k], &y["bbox"][k], 1e-2),
                        "--batch {batch}: {x} vs {y}"
                    );
                }
            }
        }
    }
    let (ok, _, err) = run(&g, &["--input", "raw", "--batch", "17"], Vec::new());
    assert!(!ok && err.contains("--batch 17"), "{err}");
}

/// `--phrase-threshold` in a stream: each line's detections are the unfiltered line's with
/// that phrase cut at its own threshold and the others at `--threshold`.
#[test]
fn phrase_thresholds_apply_to_every_frame() {
    let g = tiny();
    let img = load_image(&g.photo, true).unwrap();
    let (w, h) = (img.width.to_string(), img.height.to_string());
    let size = ["--input", "raw", "--width", &w, "--height", &h];
    let (ok, all, err) = run(&g, &size, img.data.clone());
    assert!(ok, "{err}");
    let all = all[0]["detections"].as_array().unwrap().clone();
    let score = |d: &serde_json::Value| d["score"].as_f64().unwrap() as f32;
    let pairs: Vec<_> = all
        .iter()
        .map(|d| (d["phrase"].as_str().unwrap().to_string(), score(d)))
        .collect();
    let (target, global, own) = glip_rt::testing::phrase_threshold_case(&pairs).unwrap();
    let want: Vec<_> = all
        .iter()
        .filter(|d| {
            score(d)
                >= if d["phrase"] == target.as_str() {
                    own
                } else {
                    global
                }
        })
        .cloned()
        .collect();
    let kept_by_global = all.iter().filter(|d| score(d) >= global).count();
    assert!(want.len() < all.len() && want.len() > kept_by_global);
    let t = format!("{target}={own}");
    let mut args = size.to_vec();
    let global = global.to_string();
    args.extend(["--threshold", &global, "--phrase-threshold", &t]);
    let (ok, lines, err) = run(&g, &args, [img.data.clone(), img.data.clone()].concat());
    assert!(ok, "{err}");
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["detections"].as_array().unwrap(), &want);
    }
}
