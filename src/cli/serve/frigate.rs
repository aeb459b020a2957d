//! `glip serve --zmq ENDPOINT`: the detector endpoint of Frigate's `zmq` detector
//! (frigate/detectors/plugins/zmq_ipc.py), a ZeroMQ REP socket on `ipc://PATH` or
//! `tcp://HOST:PORT`.
//!
//! A request is two frames: a JSON header `{"shape": [1, H, W, 3], "dtype": "uint8", …}` and
//! the tensor's bytes in C order (NHWC, or NCHW `[1, 3, H, W]`; `[H, W, 3]` too). The answer
//! is Frigate's detection array, also two frames: `{"shape": [20, 6], "dtype": "float32"}`
//! and 20 rows `[class, score, y_min, x_min, y_max, x_max]`, little-endian, boxes relative to
//! the image (0 to 1), best first, unused rows zero. `class` is the phrase's position in the
//! server's prompt (0-based; `GET /v1/labelmap` lists them as Frigate's labelmap file), and
//! rows scoring under `--default-threshold` are left out. A request that cannot be served
//! gets the zero array (no detections, as Frigate does on its own errors) with `"error"` in
//! the header saying why, and the connection goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glip_rt::api::Detection;
use glip_rt::preprocess::RgbImage8;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::zmtp::{RepConnection, WireError};
use super::App;

/// Rows of Frigate's detection array.
pub const ROWS: usize = 20;
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// Time a new connection has to complete the ZeroMQ handshake.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);

/// Where the REP socket listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A Unix socket (Frigate's default: `ipc:///tmp/cache/zmq_detector`).
    Ipc(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("ipc://") {
            if p.is_empty() {
                return Err(format!("{s}: the ipc endpoint names no path"));
            }
            Ok(Endpoint::Ipc(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp://") {
            Ok(Endpoint::Tcp(a.to_string()))
        } else {
            Err(format!(
                "{s}: a ZeroMQ endpoint is ipc://PATH or tcp://HOST:PORT"
            ))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Ipc(p) => write!(f, "ipc://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Channel order of the tensors Frigate sends (its model's `input_pixel_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PixelFormat {
    Rgb,
    Bgr,
}

enum Listener {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener),
}

/// The bound socket, ready to serve (so that a bad endpoint stops the server at start).
pub struct Bound {
    listener: Listener,
    /// What it listens on, for the log (the port chosen for `tcp://…:0`).
    pub name: String,
}

/// Binds `ep`: an ipc path left by an earlier run (a socket) is replaced, as ZeroMQ does;
/// any other file there is an error.
pub async fn bind(ep: &Endpoint) -> glip_rt::Result<Bound> {
    let err = |m: String| glip_rt::Error::Invalid(format!("--zmq {ep}: {m}"));
    match ep {
        Endpoint::Ipc(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(err("a file that is not a socket is in the way".into()));
                }
                std::fs::remove_file(path).map_err(|e| err(e.to_string()))?;
            }
            let l = tokio::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
            Ok(Bound {
                listener: Listener::Unix(l, path.clone()),
                name: ep.to_string(),
            })
        }
        Endpoint::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(|e| err(e.to_string()))?;
            let name = match l.local_addr() {
                Ok(a) => format!("tcp://{a}"),
                Err(_) => ep.to_string(),
            };
            Ok(Bound {
                listener: Listener::Tcp(l),
                name,
            })
        }
    }
}

/// Serves requests until `stop` turns true; then each connection finishes the request it
/// is running, and an ipc socket file is removed.
pub async fn serve(
    app: Arc<App>,
    bound: Bound,
    format: PixelFormat,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        let (app, stop_c) = (Arc::clone(&app), stop.clone());
        tokio::select! {
            _ = stop.changed() => break,
            // Finished connections are reaped as they end (Frigate reconnects after each
            // timeout), so that the set does not grow with them.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = accept(&bound.listener) => match accepted {
                Ok(Conn::Unix(s)) => {
                    conns.spawn(async move { connection(app, s, format, stop_c).await; drop(permit) });
                }
                Ok(Conn::Tcp(s)) => {
                    conns.spawn(async move { connection(app, s, format, stop_c).await; drop(permit) });
                }
                Err(e) => {
                    say!("zmq: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    while conns.join_next().await.is_some() {}
    if let Listener::Unix(_, path) = &bound.listener {
        let _ = std::fs::remove_file(path);
    }
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Unix(l, _) => Ok(Conn::Unix(l.accept().await?.0)),
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(Conn::Tcp(s))
        }
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    app: Arc<App>,
    stream: S,
    format: PixelFormat,
    mut stop: watch::Receiver<bool>,
) {
    let max_request = app.limits.max_body;
    let mut c = match tokio::time::timeout(
        HANDSHAKE_TIME,
        RepConnection::accept(stream, max_request),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return said(&e),
        Err(_) => return say!("zmq: a peer did not complete the handshake in time"),
    };
    loop {
        let req = tokio::select! {
            _ = stop.changed() => return,
            r = c.recv() => match r {
                Ok(r) => r,
                Err(e) => return said(&e),
            },
        };
        let start = Instant::now();
        app.metrics.started();
        let (header, rows, status) = match answer(&app, &req.frames, format).await {
            Ok(rows) => (json!({"shape": [ROWS, 6], "dtype": "float32"}), rows, 200),
            Err((status, kind, msg)) => {
                app.metrics.error(kind);
                (
                    json!({"shape": [ROWS, 6], "dtype": "float32", "error": msg}),
                    [0f32; ROWS * 6],
                    status,
                )
            }
        };
        app.metrics
            .finished("zmq", status, start.elapsed().as_secs_f64());
        let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let head = header.to_string();
        if let Err(e) = c.reply(&req, &[head.as_bytes(), &bytes]).await {
            return said(&e);
        }
    }
}

/// A connection's end: a protocol error is said; a peer hanging up is not news.
fn said(e: &WireError) {
    if !matches!(e, WireError::Closed) {
        say!("zmq: connection closed: {e}");
    }
}

type Refusal = (u16, &'static str, String);

/// The detection rows for one request, or why there are none.
async fn answer(
    app: &App,
    frames: &[Vec<u8>],
    format: PixelFormat,
) -> Result<[f32; ROWS * 6], Refusal> {
    let bad = |m: String| (400u16, "bad_request", m);
    let [head, tensor] = frames else {
        return Err(bad(format!(
            "a request is two frames, [header JSON, tensor bytes]; this one has {}",
            frames.len()
        )));
    };
    let image = image_of(head, tensor, format, app.limits.max_pixels).map_err(bad)?;
    let (w, h) = (image.width as f32, image.height as f32);
    let deadline = Instant::now() + app.limits.request_time;
    let prompt = Arc::clone(&app.default_prompt);
    let dets = super::http::run_job(app, Arc::clone(&prompt), image, deadline)
        .await
        .map_err(|f| f.parts())?;
    let classes: Vec<u32> = prompt.phrases.iter().map(|p| p.label).collect();
    Ok(rows(&dets, &classes, w, h, app.default_threshold))
}

/// The image in a request: a uint8 tensor [1, H, W, 3], [H, W, 3] or [1, 3, H, W] of
/// exactly H·W·3 bytes, at most `max_pixels`.
pub fn image_of(
    head: &[u8],
    tensor: &[u8],
    format: PixelFormat,
    max_pixels: u64,
) -> Result<RgbImage8, String> {
    let v: Value =
        serde_json::from_slice(head).map_err(|e| format!("the header is not JSON ({e})"))?;
    let shape: Vec<u64> = v["shape"]
        .as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect())
        .ok_or_else(|| {
            format!(
                "the header's \"shape\" is not a list of sizes: {}",
                v["shape"]
            )
        })?;
    let dtype = v["dtype"].as_str().unwrap_or("");
    if dtype != "uint8" {
        return Err(format!(
            "dtype {:?}: the tensor must be uint8 (Frigate's default input_dtype int)",
            v["dtype"]
        ));
    }
    let (h, w, nchw) = match shape[..] {
        [1, h, w, 3] | [h, w, 3] => (h, w, false),
        [1, 3, h, w] => (h, w, true),
        _ => {
            return Err(format!(
                "shape {shape:?}: one image [1, H, W, 3], [H, W, 3] or [1, 3, H, W] is needed"
            ))
        }
    };
    if h == 0 || w == 0 || h.saturating_mul(w) > max_pixels {
        return Err(format!(
            "a {w}x{h} image: sides must be positive and at most {max_pixels} pixels in all"
        ));
    }
    let n = (h * w) as usize;
    if tensor.len() as u64 != h * w * 3 {
        return Err(format!(
            "shape {shape:?} needs {} bytes; the tensor has {}",
            n * 3,
            tensor.len()
        ));
    }
    let mut rgb = if nchw {
        let mut out = vec![0u8; n * 3];
        for (p, px) in out.chunks_exact_mut(3).enumerate() {
            for (c, v) in px.iter_mut().enumerate() {
                *v = tensor[c * n + p];
            }
        }
        out
    } else {
        tensor.to_vec()
    };
    if format == PixelFormat::Bgr {
        for px in rgb.chunks_exact_mut(3) {
            px.swap(0, 2);
        }
    }
    RgbImage8::new(w as usize, h as usize, rgb).map_err(|e| e.to_string())
}

/// Frigate's rows: the best [`ROWS`] detections scoring at least `threshold`, as
/// [class, score, y_min, x_min, y_max, x_max] with boxes relative to the w×h image;
/// `classes` are the prompt's labels in order (a detection's class is its label's place).
pub fn rows(
    dets: &[Detection],
    classes: &[u32],
    w: f32,
    h: f32,
    threshold: f32,
) -> [f32; ROWS * 6] {
    let mut kept: Vec<&Detection> = dets.iter().filter(|d| d.score >= threshold).collect();
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    let ranked = kept.into_iter().filter_map(|d| {
        let class = classes.iter().position(|&l| l == d.label)?;
        Some((class, d))
    });
    let rel = |v: f32, side: f32| (v / side).clamp(0.0, 1.0);
    let mut out = [0f32; ROWS * 6];
    for (row, (class, d)) in out.chunks_exact_mut(6).zip(ranked) {
        row.copy_from_slice(&[
            class as f32,
            d.score,
            rel(d.bbox[1], h),
            rel(d.bbox[0], w),
            rel(d.bbox[3], h),
            rel(d.bbox[2], w),
        ]);
    }
    out
}

/// Frigate's labelmap file for the prompt: `index phrase` per line, in the prompt's order.
pub fn labelmap(prompt: &glip_rt::tokenizer::Prompt) -> String {
    prompt
        .phrases
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{i} {}\n", p.name))
        .collect()
}
