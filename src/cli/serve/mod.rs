//! `glip serve`: GLIP as an HTTP detection service (its own API, DeepStack's, a page to try
//! it), on tokio + axum, and optionally as Frigate's ZeroMQ detector ([`frigate`], over
//! [`zmtp`]). Detection runs on worker threads, one detector each, fed by one bounded queue
//! ([`queue`]); the routes are in [`http`], the counters in [`metrics`].

mod frigate;
mod http;
mod metrics;
mod queue;
mod zmtp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use glip_rt::tokenizer::Prompt;
use glip_rt::Error;

use super::crate_result::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Address to listen on. The default answers this machine only; give 0.0.0.0:PORT to
    /// serve the network (with --api-key).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub bind: SocketAddr,
    /// The prompt of requests that give none (and of every DeepStack request). Default:
    /// COCO's 80 category names, as DeepStack detects.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Phrases of --prompt to ground (a caption), or `auto` for its noun phrases.
    #[arg(long, num_args = 1..)]
    pub phrases: Vec<String>,
    /// The score threshold of requests that give none (DeepStack's clients send 0.45).
    #[arg(long, default_value_t = 0.45)]
    pub default_threshold: f32,
    /// Requires this key: DeepStack's `api_key` field or `Authorization: Bearer <key>`.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Detection workers (each loads the model once).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Requests that may wait for a worker; one more is answered 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Up to this many queued requests with the same prompt run as one batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Prompts whose text features each worker keeps (least recently used dropped).
    #[arg(long, default_value_t = 16)]
    pub prompt_cache: usize,
    /// Largest request body, in MiB (413 above).
    #[arg(long, default_value_t = 32)]
    pub max_body_mib: usize,
    /// Largest image, in pixels (413 above).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// Seconds a request may take, upload, wait and detection together (408 when the
    /// upload is not in by then, 503 when it waited in the queue).
    #[arg(long, default_value_t = 60.0)]
    pub request_timeout: f64,
    /// Also serve Frigate's `zmq` detector on this ZeroMQ endpoint (a REP socket):
    /// ipc://PATH (Frigate's default: ipc:///tmp/cache/zmq_detector) or tcp://HOST:PORT.
    /// Classes are the prompt's phrases in order (GET /v1/labelmap gives Frigate's
    /// labelmap file); rows under --default-threshold are left out.
    #[arg(long, value_name = "ENDPOINT")]
    pub zmq: Option<frigate::Endpoint>,
    /// Channel order of the tensors Frigate sends on --zmq (its model's input_pixel_format).
    #[arg(long, value_enum, default_value = "rgb")]
    pub zmq_pixel_format: frigate::PixelFormat,
}

pub struct Limits {
    pub max_body: usize,
    pub max_pixels: u64,
    pub request_time: Duration,
}

/// What every request handler shares.
pub struct App {
    pub queue: Arc<queue::Queue>,
    pub metrics: Arc<metrics::Metrics>,
    pub limits: Limits,
    pub default_prompt: Arc<Prompt>,
    pub default_threshold: f32,
    pub api_key: Option<String>,
    pub exif_orientation: bool,
    pub device: String,
    pub workers: usize,
}

/// A prompt as `glip detect` takes it: class names, or a caption with phrases (`auto`).
pub fn parse_prompt(text: &str, phrases: &[String]) -> glip_rt::Result<Prompt> {
    match phrases {
        [] => Prompt::parse(text),
        [auto] if auto == "auto" => glip_rt::phrases::auto_prompt(text),
        _ => Prompt::with_phrases(text, phrases),
    }
}

fn check(args: &Args) -> glip_rt::Result<()> {
    let bad = |m: String| Err(Error::Invalid(m));
    if !(0.0..=1.0).contains(&args.default_threshold) {
        return bad(format!(
            "--default-threshold {} must be in [0, 1]",
            args.default_threshold
        ));
    }
    if !(1..=64).contains(&args.workers) {
        return bad(format!("--workers {} must be 1 to 64", args.workers));
    }
    if !(1..=100_000).contains(&args.queue) {
        return bad(format!("--queue {} must be 1 to 100000", args.queue));
    }
    if !(1..=64).contains(&args.batch) {
        return bad(format!("--batch {} must be 1 to 64", args.batch));
    }
    if !(1..=4096).contains(&args.max_body_mib) {
        return bad(format!(
            "--max-body-mib {} must be 1 to 4096",
            args.max_body_mib
        ));
    }
    if args.max_pixels == 0 {
        return bad("--max-pixels must be positive".into());
    }
    if !(args.request_timeout.is_finite()
        && args.request_timeout > 0.0
        && args.request_timeout <= 86_400.0)
    {
        return bad(format!(
            "--request-timeout {} must be in (0, 86400] s",
            args.request_timeout
        ));
    }
    if args.api_key.as_deref().is_some_and(str::is_empty) {
        return bad("--api-key is empty".into());
    }
    Ok(())
}

pub fn run(args: Args) -> Result {
    check(&args)?;
    let default_prompt = match &args.prompt {
        Some(p) => parse_prompt(p, &args.phrases)?,
        None => Prompt::parse(&super::bench::COCO80.join(". "))?,
    };
    // The detectors keep every detection over --threshold (default 0); each request's
    // threshold is applied to them.
    let builder = args.model.builder()?.prompt_cache(args.prompt_cache);
    let mut detectors = Vec::with_capacity(args.workers);
    for _ in 0..args.workers {
        let mut det = builder.clone().build()?;
        // Encoded once here, so that a bad default prompt stops the server at start.
        det.set_prompt_parsed(default_prompt.clone())?;
        detectors.push(det);
    }
    crate::model_loaded();
    let first = &detectors[0];
    if let Some(n) = first.device_notice() {
        say!("{n}");
    }
    for w in first.warnings() {
        say!("warning: {w}");
    }
    let device = first.device().name().to_string();
    let exif_orientation = first.preprocess_config().exif_orientation;
    let queue = queue::Queue::new(args.queue, args.batch);
    let metrics = Arc::new(metrics::Metrics::default());
    let workers = queue::start_workers(&queue, &metrics, detectors);
    let app = Arc::new(App {
        queue: Arc::clone(&queue),
        metrics,
        limits: Limits {
            max_body: args.max_body_mib << 20,
            max_pixels: args.max_pixels,
            request_time: Duration::from_secs_f64(args.request_timeout),
        },
        default_prompt: Arc::new(default_prompt),
        default_threshold: args.default_threshold,
        api_key: args.api_key.clone(),
        exif_orientation,
        device,
        workers: workers.len(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("glip-serve-io")
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the async runtime: {e}")))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", args.bind)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Invalid(format!("listening socket: {e}")))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let zmq = match &args.zmq {
            Some(ep) => {
                let bound = frigate::bind(ep).await?;
                say!("serving Frigate's zmq detector on {}", bound.name);
                Some(tokio::spawn(frigate::serve(
                    Arc::clone(&app),
                    bound,
                    args.zmq_pixel_format,
                    stop_rx,
                )))
            }
            None => None,
        };
        say!(
            "listening on http://{addr} ({} worker(s), queue {})",
            app.workers,
            args.queue
        );
        let served = axum::serve(listener, http::router(Arc::clone(&app)))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            })
            .await
            .map_err(|e| Error::Invalid(format!("serving: {e}")));
        // The ZeroMQ connections finish the request each is running.
        if let Some(z) = zmq {
            let _ = z.await;
        }
        served
    });
    // In-flight requests are answered by now; the workers finish what is queued, then stop.
    queue.close();
    for w in workers {
        let _ = w.join();
    }
    served?;
    say!("stopped");
    Ok(std::process::ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C: stop taking connections, finish the requests in flight.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    say!("shutting down: finishing the requests in flight");
}
