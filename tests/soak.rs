//! A long stream keeps memory flat and latency steady: `glip stream` with the tiny model on
//! the CPU, 2,000 frames of 64×64 (GLIP_SOAK_FRAMES=10000 for the long run docs/perf.md
//! records). Resident memory after the warm-up frames must stay within 5 % of its value at
//! the end of the warm-up, and the median time per frame of the last frames within 2× that
//! of the first frames after the warm-up (a generous bound for a shared CI machine; a leak
//! or a cost that grows with the frame count exceeds both).

use glip_rt::testing::{median, rss_kb, testdata, E2eGolden};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

const WARM_UP: usize = 200;

#[test]
fn a_long_stream_keeps_memory_flat_and_latency_steady() {
    if rss_kb(std::process::id()).is_none() {
        eprintln!("skipped: no /proc to read resident memory from");
        return;
    }
    let frames: usize = std::env::var("GLIP_SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
        .max(WARM_UP + 400);
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    // The golden's config at a 64-pixel input, so that thousands of frames take seconds.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak");
    let config = g.config_at_input_side(64, &dir).unwrap();

    let (w, h) = (64usize, 64usize);
    let mut child = Command::new(env!("CARGO_BIN_EXE_glip"))
        .arg("stream")
        .arg("--config")
        .arg(&config)
        .arg("--weights")
        .arg(&g.weights)
        .arg("--bert-config")
        .arg(testdata().join("tiny_bert_config.json"))
        .args(["--device", "cpu", "--prompt", &g.caption, "--input", "raw"])
        .args(["--width", &w.to_string(), "--height", &h.to_string()])
        .args(["--stats-every", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut sin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // A few different pictures in turn (the frame index in the pixels).
        for i in 0..frames {
            let frame: Vec<u8> = (0..w * h * 3)
                .map(|k| ((k * 31 + (i % 7) * 57) % 251) as u8)
                .collect();
            if sin.write_all(&frame).is_err() {
                return;
            }
        }
    });
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut at = Vec::with_capacity(frames);
    let (mut rss_warm, mut rss_max) = (0u64, 0u64);
    for (i, line) in out.lines().enumerate() {
        let line = line.unwrap();
        at.push(Instant::now());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["frame"], i as u64, "{line}");
        assert!(v["detections"].is_array(), "frame {i}: {line}");
        if i + 1 == WARM_UP {
            rss_warm = rss_kb(pid).unwrap_or(0);
        } else if i + 1 > WARM_UP && (i + 1) % 50 == 0 {
            rss_max = rss_max.max(rss_kb(pid).unwrap_or(0));
        }
    }
    writer.join().unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(at.len(), frames, "every frame gets its line");
    assert!(rss_warm > 0, "resident memory not read");
    let growth = rss_max as f64 / rss_warm as f64;
    let gaps: Vec<f64> = at.windows(2).map(|p| (p[1] - p[0]).as_secs_f64()).collect();
    let first = median(gaps[WARM_UP..WARM_UP + 200].to_vec());
    let last = median(gaps[gaps.len() - 200..].to_vec());
    println!(
        "{frames} frames of {w}x{h}: resident {rss_warm} kB after {WARM_UP} frames, at most \
         {rss_max} kB after ({:+.2} %); median per frame {:.2} ms after the warm-up, {:.2} ms \
         at the end; {}",
        (growth - 1.0) * 100.0,
        first * 1e3,
        last * 1e3,
        err.lines().last().unwrap_or("")
    );
    assert!(
        growth <= 1.05,
        "resident memory grew {:.1} %",
        (growth - 1.0) * 100.0
    );
    assert!(
        last <= 2.0 * first,
        "latency drifted: {:.2} ms per frame at the end against {:.2} ms after the warm-up",
        last * 1e3,
        first * 1e3
    );
    std::fs::remove_dir_all(&dir).ok();
}
