//! `glip stream`: frames on stdin, one JSON line per frame on stdout (video pipelines:
//! `ffmpeg … -f rawvideo -pix_fmt rgb24 - | glip stream --width W --height H …`).
//!
//! A bad frame gives a JSON line with an `error` for that frame and the stream goes on;
//! every frame read gets exactly one line, flushed as soon as it is written. Frames are read,
//! decoded and preprocessed on a reader thread a few frames ahead of the model, so that host
//! work overlaps the forward of the frame before.

use super::crate_result::Result;
use glip_rt::api::Detection;
use glip_rt::model::glip::Taps;
use glip_rt::pixfmt::PixFmt;
use glip_rt::preprocess::{decode_image, preprocess_image, RgbImage8};
use glip_rt::{limits, Error};
use std::io::{BufRead, Read};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Input {
    /// Raw frames of --width x --height in --pix-fmt, back to back.
    Raw,
    /// Encoded images (JPEG/PNG/WebP), each preceded by its byte length (u32 little endian).
    Encoded,
    /// A YUV4MPEG2 stream (`ffmpeg -f yuv4mpegpipe`): size, rate and format from its header.
    Y4m,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// The prompt (class names separated by '.'), encoded once for the whole stream.
    #[arg(long)]
    pub prompt: String,
    #[command(flatten)]
    pub phrase_thresholds: super::PhraseThresholdArgs,
    #[arg(long, value_enum, default_value_t = Input::Raw)]
    pub input: Input,
    /// Frame width for --input raw.
    #[arg(long)]
    pub width: Option<usize>,
    /// Frame height for --input raw.
    #[arg(long)]
    pub height: Option<usize>,
    /// Pixel format of raw frames, as ffmpeg names it: rgb24, bgr24, rgba, bgra, gray, nv12,
    /// yuv420p (YUV as ffmpeg writes it by default: BT.601, limited range, 4:2:0). Default
    /// rgb24.
    #[arg(long, value_parser = parse_pix_fmt)]
    pub pix_fmt: Option<PixFmt>,
    /// Frames per forward (1..=16): a batch is filled unless the input ends first.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seconds between throughput lines on stderr (frames/s, latency p50/p99 of the
    /// interval); 0: only the line at the end.
    #[arg(long, default_value_t = 5.0)]
    pub stats_every: f64,
}

fn parse_pix_fmt(s: &str) -> std::result::Result<PixFmt, String> {
    s.parse()
}

#[derive(serde::Serialize)]
struct FrameLine<'a> {
    frame: u64,
    /// Seconds from the stream's start, where the input says (a y4m frame rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detections: Option<&'a [Detection]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Largest encoded frame accepted (a corrupt length prefix must not allocate gigabytes).
const MAX_ENCODED: usize = limits::MAX_IMAGE_FILE_BYTES as usize;

/// Reads exactly `buf.len()` bytes; Ok(false) at a clean end of stream before the first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("stream ended inside a frame ({got} of {} bytes)", buf.len()),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

pub fn run(a: Args) -> Result {
    // Post-processing (ATSS + NMS) takes up to MAX_BATCH images per call.
    let max_batch = glip_rt::backend::atss::MAX_BATCH;
    if !(1..=max_batch).contains(&a.batch) {
        return Err(Error::Invalid(format!(
            "--batch {}: must be in 1..={max_batch}",
            a.batch
        )));
    }
    let every = match a.stats_every {
        s if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
        0.0 => None,
        s => {
            return Err(Error::Invalid(format!(
                "--stats-every {s}: give seconds (0 for the end only)"
            )))
        }
    };
    let pix_fmt = match (a.input, a.pix_fmt) {
        (Input::Raw, f) => f.unwrap_or(PixFmt::Rgb24),
        (_, Some(f)) => {
            return Err(Error::Invalid(format!(
                "--pix-fmt {} applies to --input raw only (encoded frames and y4m streams \
                 carry their format)",
                f.name()
            )))
        }
        (_, None) => PixFmt::Rgb24,
    };
    // A y4m stream's header, read before anything else (stdin's buffer is shared, so the
    // reader thread goes on where this read stopped).
    let y4m = match a.input {
        Input::Y4m => {
            if a.width.is_some() || a.height.is_some() {
                return Err(Error::Invalid(
                    "--width/--height apply to --input raw only (a y4m header gives the size)"
                        .into(),
                ));
            }
            Some(glip_rt::y4m::Header::read(&mut std::io::stdin().lock())?)
        }
        _ => None,
    };
    let (pix_fmt, raw_size) = match &y4m {
        Some(h) => (h.pix_fmt, Some((h.width, h.height, h.frame_bytes()?))),
        None => (pix_fmt, None),
    };
    let raw_size = match a.input {
        Input::Y4m => raw_size,
        Input::Raw => match (a.width, a.height) {
            (Some(w), Some(h)) if w > 0 && h > 0 => {
                // Checked before anything is allocated: an overflowing product once made a
                // zero-byte frame and an endless stream of error lines.
                for (flag, v) in [("--width", w), ("--height", h)] {
                    if v > limits::MAX_IMAGE_SIDE {
                        return Err(Error::Limit {
                            what: format!("{flag} {v}"),
                            msg: format!(
                                "exceeds the limit of {} pixels per side",
                                limits::MAX_IMAGE_SIDE
                            ),
                        });
                    }
                }
                limits::checked_size(
                    "--width x --height",
                    &[w, h],
                    limits::MAX_IMAGE_PIXELS,
                    "pixels",
                )?;
                let bytes = pix_fmt.frame_bytes(w, h).ok_or_else(|| Error::Limit {
                    what: format!("{w}x{h} {}", pix_fmt.name()),
                    msg: "the frame size overflows".into(),
                })?;
                Some((w, h, bytes))
            }
            _ => {
                return Err(Error::Invalid(
                    "--input raw needs --width and --height (> 0)".into(),
                ))
            }
        },
        Input::Encoded => None,
    };
    let mut det = a.model.builder()?.build()?;
    crate::model_loaded();
    if let Some(n) = det.device_notice() {
        say!("{n}");
    }
    for w in det.warnings() {
        say!("warning: {w}");
    }
    det.set_prompt(&a.prompt)?;
    a.phrase_thresholds.apply(&mut det)?;
    let exif = det.preprocess_config().exif_orientation;

    // Frames are read, decoded and preprocessed on a thread of their own, up to
    // READ_AHEAD frames ahead, while this thread runs the model on the frame before: on a
    // GPU the host work of the next frame overlaps the current forward.
    let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
    let pre_cfg = det.preprocess_config().clone();
    std::thread::Builder::new()
        .name("glip-stream-reader".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let is_y4m = y4m.is_some();
            for frame in 0u64.. {
                let Some((image, fatal)) =
                    read_frame(&mut input, raw_size, pix_fmt, is_y4m, exif, frame)
                else {
                    break;
                };
                let pre = image.and_then(|img| preprocess_image(&img, &pre_cfg));
                // The receiver is gone when the output closed: stop reading.
                if tx.send((frame, pre, fatal)).is_err() || fatal {
                    break;
                }
            }
        })
        .map_err(|e| Error::Invalid(format!("cannot start the frame reader: {e}")))?;
    let mut throughput = super::throughput::Throughput::new(every);
    let mut out = super::out::Out::new();
    let mut errors = 0u64;
    let mut frames = rx.into_iter();
    // Ends when the reader does (end of input, or a frame that loses the stream position).
    loop {
        // Up to --batch frames, in order; a frame that loses the position ends the group
        // and the stream.
        let mut group = Vec::with_capacity(a.batch);
        let mut end = false;
        while group.len() < a.batch {
            let Some(item) = frames.next() else {
                end = true;
                break;
            };
            let fatal = item.2;
            group.push(item);
            if fatal {
                end = true;
                break;
            }
        }
        if group.is_empty() {
            break;
        }
        // Latency: from the model taking the frames to their lines written.
        let took = Instant::now();
        // Frames that failed to read or preprocess keep their error; the others run together.
        let mut results: Vec<(u64, std::result::Result<Vec<Detection>, String>)> = Vec::new();
        let (mut ids, mut pres) = (Vec::new(), Vec::new());
        for (frame, pre, _) in group {
            match pre {
                Ok(p) => {
                    ids.push(frame);
                    pres.push(p);
                }
                Err(e) => results.push((frame, Err(e.to_string()))),
            }
        }
        if !pres.is_empty() {
            match det.run(&pres, &mut Taps::disabled()) {
                Ok((dets, _)) if dets.len() == ids.len() => {
                    results.extend(ids.into_iter().zip(dets.into_iter().map(Ok)))
                }
                Ok(_) => results.extend(
                    ids.into_iter()
                        .map(|f| (f, Err("the batch gave another number of results".into()))),
                ),
                Err(e) => results.extend(ids.into_iter().map(|f| (f, Err(e.to_string())))),
            }
        }
        results.sort_by_key(|(frame, _)| *frame);
        for (frame, result) in &results {
            let line = FrameLine {
                frame: *frame,
                time: y4m.and_then(|h| h.time_of(*frame)),
                detections: result.as_ref().ok().map(|d| d.as_slice()),
                error: result.as_ref().err().cloned(),
            };
            errors += u64::from(result.is_err());
            let text =
                serde_json::to_string(&line).map_err(|e| Error::Invalid(format!("json: {e}")))?;
            outln!(out, "{text}");
            if let Some(l) = throughput.frame(took.elapsed(), result.is_ok()) {
                say!("{l}");
            }
        }
        if end {
            break;
        }
    }
    say!("{}", throughput.summary());
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Frames the reader may hold ahead of the model (each one preprocessed image).
const READ_AHEAD: usize = 2;

/// One frame of `input`: its image or why it is bad, and whether the stream position is lost
/// (the stream must end); None at a clean end of input.
#[allow(clippy::too_many_arguments)]
fn read_frame(
    input: &mut impl BufRead,
    raw_size: Option<(usize, usize, usize)>,
    pix_fmt: PixFmt,
    y4m: bool,
    exif: bool,
    frame: u64,
) -> Option<(glip_rt::Result<RgbImage8>, bool)> {
    if y4m {
        match glip_rt::y4m::read_frame_marker(input) {
            Ok(true) => {}
            Ok(false) => return None,
            // Not a FRAME line: where the next frame starts is unknown.
            Err(e) => return Some((Err(e), true)),
        }
    }
    let (image, fatal): (glip_rt::Result<RgbImage8>, bool) = match raw_size {
        Some((w, h, bytes)) => {
            let mut buf = vec![0u8; bytes];
            match read_full(input, &mut buf) {
                Ok(false) => return None,
                Ok(true) => (pix_fmt.to_rgb(w, h, &buf), false),
                Err(e) => (
                    Err(Error::Image {
                        what: format!("frame {frame}"),
                        msg: e.to_string(),
                    }),
                    true,
                ),
            }
        }
        None => {
            let mut len = [0u8; 4];
            match read_full(input, &mut len) {
                Ok(false) => return None,
                Err(e) => (
                    Err(Error::Image {
                        what: format!("frame {frame}"),
                        msg: e.to_string(),
                    }),
                    true,
                ),
                Ok(true) => {
                    let n = u32::from_le_bytes(len) as usize;
                    if n > MAX_ENCODED {
                        (
                            Err(Error::Image {
                                what: format!("frame {frame}"),
                                msg: format!("length prefix {n} exceeds {MAX_ENCODED} bytes"),
                            }),
                            true,
                        )
                    } else {
                        let mut buf = vec![0u8; n];
                        match read_full(input, &mut buf) {
                            Ok(true) | Ok(false) if n == 0 => (
                                Err(Error::Image {
                                    what: format!("frame {frame}"),
                                    msg: "empty frame".into(),
                                }),
                                false,
                            ),
                            Ok(_) => (decode_image(&buf, &format!("frame {frame}"), exif), false),
                            Err(e) => (
                                Err(Error::Image {
                                    what: format!("frame {frame}"),
                                    msg: e.to_string(),
                                }),
                                true,
                            ),
                        }
                    }
                }
            }
        }
    };
    Some((image, fatal))
}
