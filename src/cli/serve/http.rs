//! The routes of `glip serve`:
//!
//! - `POST /v1/vision/detection`: DeepStack's object-detection API (multipart `image`,
//!   optional `min_confidence`, `api_key`), answered as DeepStack answers:
//!   `{"success": true, "predictions": [{"label", "confidence", "x_min", "y_min", "x_max",
//!   "y_max"}]}` in pixels, with the server's prompt;
//! - `POST /v1/detect`: the image as multipart `image` or as the raw body, a `prompt` (and
//!   `phrases`, `threshold`, `phrase_thresholds`) per request (form fields, or the query
//!   with a raw body);
//! - `GET /health`, `GET /metrics` (Prometheus text), `GET /` (the page), `GET
//!   /v1/labelmap` (the prompt's phrases as Frigate's labelmap file, for `--zmq`).
//!
//! Every answer that is not a success is `{"success": false, "error": "…"}` with a 4xx/5xx
//! status naming what is wrong: 400 bad request, 401 API key, 408 request not received in
//! time, 413 body or image too large, 503 queue full or not served in time (Retry-After).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use glip_rt::api::Detection;
use glip_rt::tokenizer::Prompt;
use serde_json::json;
use tokio::sync::oneshot;

use super::queue::{Job, Refused};
use super::App;

/// Longest prompt a request may give (LVIS's 1,203 names take about 20 KB): it is parsed on
/// the connection's thread.
const MAX_PROMPT_BYTES: usize = 64 << 10;

/// An answer that is not a success: its status and message (and Retry-After for 503).
pub struct Failure {
    status: StatusCode,
    kind: &'static str,
    msg: String,
}

fn fail(status: StatusCode, kind: &'static str, msg: impl Into<String>) -> Failure {
    Failure {
        status,
        kind,
        msg: msg.into(),
    }
}

impl Failure {
    /// (HTTP status, kind for the metrics, message), for the ZeroMQ endpoint's answers.
    pub fn parts(self) -> (u16, &'static str, String) {
        (self.status.as_u16(), self.kind, self.msg)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"success": false, "error": self.msg})),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r.extensions_mut().insert(ErrorKind(self.kind));
        r
    }
}

/// The kind of a failed answer, for the metrics.
#[derive(Clone, Copy)]
struct ErrorKind(&'static str);

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/labelmap", get(labelmap))
        .route("/v1/vision/detection", post(deepstack))
        .route("/v1/detect", post(detect))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            track,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(app.limits.max_body))
        .with_state(app)
}

/// Counts, times and bounds every request: one not answered within the request time limit
/// is answered 408 (its upload did not arrive in time; a wait in the queue is answered 503
/// by the handler before that).
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route: &'static str = match req.uri().path() {
        "/" => "/",
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/v1/labelmap" => "/v1/labelmap",
        "/v1/vision/detection" => "/v1/vision/detection",
        "/v1/detect" => "/v1/detect",
        _ => "other",
    };
    let start = Instant::now();
    app.metrics.started();
    let limit = app.limits.request_time + Duration::from_millis(250);
    let response = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => fail(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request was not received within {} s",
                app.limits.request_time.as_secs_f64()
            ),
        )
        .into_response(),
    };
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        app.metrics.error(kind);
    }
    app.metrics.finished(
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page.html"),
    )
}

async fn health(State(app): State<Arc<App>>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "device": app.device,
        "workers": app.workers,
        "queue_depth": app.queue.depth(),
        "queue_capacity": app.queue.capacity(),
        "prompt": app.default_prompt.caption,
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(app.queue.depth(), app.queue.capacity()),
    )
}

/// The fields of a request (multipart form, or query + raw body).
#[derive(Default)]
struct Fields {
    image: Option<Bytes>,
    prompt: Option<String>,
    phrases: Vec<String>,
    threshold: Option<String>,
    phrase_thresholds: Option<String>,
    api_key: Option<String>,
}

impl Fields {
    fn set(&mut self, name: &str, value: String) {
        match name {
            "prompt" => self.prompt = Some(value),
            "phrases" => self.phrases.push(value),
            "threshold" | "min_confidence" => self.threshold = Some(value),
            "phrase_thresholds" => self.phrase_thresholds = Some(value),
            "api_key" => self.api_key = Some(value),
            // Unknown fields are ignored, as DeepStack does.
            _ => {}
        }
    }
}

async fn read_fields(req: Request) -> Result<Fields, Failure> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut f = Fields::default();
    if multipart {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| fail(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        loop {
            let field = match form.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return Err(multipart_failure(e.status(), e.body_text())),
            };
            let name = field.name().unwrap_or("").to_string();
            let data = field
                .bytes()
                .await
                .map_err(|e| multipart_failure(e.status(), e.body_text()))?;
            if name == "image" {
                f.image = Some(data);
            } else {
                let value = String::from_utf8(data.to_vec()).map_err(|_| {
                    fail(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("form field {name:?} is not UTF-8 text"),
                    )
                })?;
                f.set(&name, value);
            }
        }
    } else {
        let (parts, body) = req.into_parts();
        let query: Query<Vec<(String, String)>> = Query::try_from_uri(&parts.uri)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        for (k, v) in query.0 {
            f.set(&k, v);
        }
        let bytes = Bytes::from_request(Request::from_parts(parts, body), &())
            .await
            .map_err(|e| multipart_failure(e.status(), e.body_text()))?;
        if !bytes.is_empty() {
            f.image = Some(bytes);
        }
    }
    Ok(f)
}

/// A body that could not be read: too large (413) or malformed (400).
fn multipart_failure(status: StatusCode, text: String) -> Failure {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        fail(status, "too_large", text)
    } else {
        fail(StatusCode::BAD_REQUEST, "bad_request", text)
    }
}

/// `--api-key`: the `api_key` field (DeepStack) or `Authorization: Bearer <key>`.
fn authorize(app: &App, headers: &HeaderMap, field: Option<&str>) -> Result<(), Failure> {
    let Some(key) = app.api_key.as_deref() else {
        return Ok(());
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // DeepStack's clients send an empty api_key when none is configured.
    let given = field.filter(|f| !f.is_empty()).or(bearer);
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
        Ok(())
    } else {
        Err(fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (the api_key field or an Authorization: Bearer header)",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_threshold(app: &App, given: Option<&str>) -> Result<f32, Failure> {
    let Some(text) = given else {
        return Ok(app.default_threshold);
    };
    match text.trim().parse::<f32>() {
        Ok(t) if (0.0..=1.0).contains(&t) => Ok(t),
        _ => Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("threshold {text:?} is not a number in [0, 1]"),
        )),
    }
}

/// A request's per-phrase thresholds: a JSON object `{"phrase": threshold, …}` naming
/// phrases of `prompt` (as `glip detect --phrase-threshold`: that phrase's detections are
/// kept from its threshold on, the others from the request's threshold).
fn parse_phrase_thresholds(
    given: Option<&str>,
    prompt: &Prompt,
) -> Result<Vec<(String, f32)>, Failure> {
    let Some(text) = given else {
        return Ok(Vec::new());
    };
    let bad = |m: String| fail(StatusCode::BAD_REQUEST, "bad_request", m);
    let out = glip_rt::api::phrase_thresholds_from_json(text)
        .map_err(|e| bad(format!("phrase_thresholds: {e}")))?;
    let known: Vec<&str> = prompt.phrases.iter().map(|p| p.name.as_str()).collect();
    glip_rt::api::check_phrase_names(out.iter().map(|(n, _)| n), &known)
        .map_err(|e| bad(format!("phrase_thresholds: {e}")))?;
    Ok(out)
}

/// The score a detection needs: its phrase's own threshold, else the request's.
fn min_score(d: &Detection, threshold: f32, per_phrase: &[(String, f32)]) -> f32 {
    per_phrase
        .iter()
        .find(|(name, _)| *name == d.phrase)
        .map_or(threshold, |&(_, t)| t)
}

/// The image checked (size from its header first) and decoded off the async threads.
async fn decode(
    app: &App,
    bytes: Option<Bytes>,
) -> Result<glip_rt::preprocess::RgbImage8, Failure> {
    let bytes = bytes.ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no image: send it as the multipart field \"image\" (or as the body of /v1/detect)",
        )
    })?;
    let max_pixels = app.limits.max_pixels;
    let exif = app.exif_orientation;
    let task = tokio::task::spawn_blocking(move || {
        let dims = image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        if let Some((w, h)) = dims {
            if w as u64 * h as u64 > max_pixels {
                return Err(fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the image is {w}x{h}: over the limit of {max_pixels} pixels"),
                ));
            }
        }
        glip_rt::preprocess::decode_image(&bytes, "in the request", exif)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, "bad_image", e.to_string()))
    });
    task.await
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

/// The server's prompt as Frigate's labelmap file (`index phrase` per line): the classes of
/// the ZeroMQ endpoint's rows (frigate.rs).
async fn labelmap(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        super::frigate::labelmap(&app.default_prompt),
    )
        .into_response()
}

/// Queues the job and waits for its detections (until the request's time is up).
pub async fn run_job(
    app: &App,
    prompt: Arc<Prompt>,
    image: glip_rt::preprocess::RgbImage8,
    deadline: Instant,
) -> Result<Vec<Detection>, Failure> {
    let (tx, rx) = oneshot::channel();
    app.queue
        .push(Job {
            prompt,
            image,
            reply: tx,
        })
        .map_err(|r| match r {
            Refused::Full => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!(
                    "busy: {} requests are already waiting; retry later",
                    app.queue.capacity()
                ),
            ),
            Refused::Closed => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ),
        })?;
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, rx).await {
        Ok(Ok(Ok(dets))) => Ok(dets),
        Ok(Ok(Err(e))) => Err(match e {
            glip_rt::Error::Prompt(m) => fail(StatusCode::BAD_REQUEST, "bad_prompt", m),
            e => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }),
        Ok(Err(_)) => Err(fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the worker stopped",
        )),
        Err(_) => Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "not served within {} s (busy); retry later",
                app.limits.request_time.as_secs_f64()
            ),
        )),
    }
}

async fn deepstack(State(app): State<Arc<App>>, req: Request) -> Result<Response, Failure> {
    let deadline = Instant::now() + app.limits.request_time;
    let headers = req.headers().clone();
    let f = read_fields(req).await?;
    authorize(&app, &headers, f.api_key.as_deref())?;
    let threshold = parse_threshold(&app, f.threshold.as_deref())?;
    let per_phrase = parse_phrase_thresholds(f.phrase_thresholds.as_deref(), &app.default_prompt)?;
    let image = decode(&app, f.image).await?;
    let (w, h) = (image.width as f32, image.height as f32);
    let dets = run_job(&app, Arc::clone(&app.default_prompt), image, deadline).await?;
    let px = |v: f32, max: f32| v.round().clamp(0.0, max) as i64;
    let predictions: Vec<_> = dets
        .iter()
        .filter(|d| d.score >= min_score(d, threshold, &per_phrase))
        .map(|d| {
            json!({
                "label": d.phrase,
                "confidence": d.score,
                "x_min": px(d.bbox[0], w),
                "y_min": px(d.bbox[1], h),
                "x_max": px(d.bbox[2], w),
                "y_max": px(d.bbox[3], h),
            })
        })
        .collect();
    Ok(axum::Json(json!({"success": true, "predictions": predictions})).into_response())
}

async fn detect(State(app): State<Arc<App>>, req: Request) -> Result<Response, Failure> {
    let start = Instant::now();
    let deadline = start + app.limits.request_time;
    let headers = req.headers().clone();
    let f = read_fields(req).await?;
    authorize(&app, &headers, f.api_key.as_deref())?;
    let threshold = parse_threshold(&app, f.threshold.as_deref())?;
    let prompt = match f.prompt.as_deref() {
        None if !f.phrases.is_empty() => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "bad_prompt",
                "phrases were given without the prompt (caption) they are phrases of",
            ))
        }
        None => Arc::clone(&app.default_prompt),
        Some(text) if text.len() > MAX_PROMPT_BYTES => {
            return Err(fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the prompt is {} bytes; at most {MAX_PROMPT_BYTES}",
                    text.len()
                ),
            ))
        }
        Some(text) => Arc::new(
            super::parse_prompt(text, &f.phrases)
                .map_err(|e| fail(StatusCode::BAD_REQUEST, "bad_prompt", e.to_string()))?,
        ),
    };
    let per_phrase = parse_phrase_thresholds(f.phrase_thresholds.as_deref(), &prompt)?;
    let image = decode(&app, f.image).await?;
    let (w, h) = (image.width, image.height);
    let caption = prompt.caption.clone();
    let dets = run_job(&app, prompt, image, deadline).await?;
    let detections: Vec<_> = dets
        .iter()
        .filter(|d| d.score >= min_score(d, threshold, &per_phrase))
        .map(|d| json!({"phrase": d.phrase, "label": d.label, "score": d.score, "box": d.bbox}))
        .collect();
    Ok(axum::Json(json!({
        "success": true,
        "prompt": caption,
        "width": w,
        "height": h,
        "threshold": threshold,
        "phrase_thresholds": per_phrase.iter().map(|(n, t)| (n.clone(), json!(t))).collect::<serde_json::Map<_, _>>(),
        "detections": detections,
        "duration_ms": start.elapsed().as_secs_f64() * 1e3,
    }))
    .into_response())
}
