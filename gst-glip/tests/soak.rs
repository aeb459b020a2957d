//! A long pipeline through `glipdetect` keeps memory flat and latency steady: the tiny model
//! on the CPU at a 64-pixel input, 2,000 frames of 64×64 from videotestsrc
//! (GLIP_SOAK_FRAMES=10000 for the long run docs/perf.md records). As tests/soak.rs does for
//! `glip stream`: resident memory of this process after the warm-up frames within 5 % of its
//! value at the end of the warm-up, and the median time per frame of the last frames within
//! 2× that of the first frames after the warm-up. Its own test binary, so that no other test
//! shares the process whose memory it reads.

use glip_rt::testing::{median, rss_kb, testdata, E2eGolden};
use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const WARM_UP: usize = 200;

/// Resident memory of this process in kB.
fn rss() -> Option<u64> {
    rss_kb(std::process::id())
}

#[test]
fn a_long_pipeline_keeps_memory_flat_and_latency_steady() {
    if rss().is_none() {
        eprintln!("skipped: no /proc to read resident memory from");
        return;
    }
    let frames: usize = std::env::var("GLIP_SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
        .max(WARM_UP + 400);
    gst::init().unwrap();
    gstglip::plugin_register_static().unwrap();
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    // The golden's config at a 64-pixel input, so that thousands of frames take seconds.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gst-soak");
    let config = g.config_at_input_side(64, &dir).unwrap();

    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! \
         video/x-raw,format=NV12,width=64,height=64 ! \
         glipdetect config=\"{}\" weights=\"{}\" bert-config=\"{}\" device=cpu prompt=\"{}\" ! \
         fakesink name=sink signal-handoffs=true sync=false",
        config.display(),
        g.weights.display(),
        testdata().join("tiny_bert_config.json").display(),
        g.caption
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    // Per frame: (seconds since the last frame, resident kB, metas on the buffer).
    let log = Arc::new(Mutex::new(Vec::<(f64, u64, usize)>::with_capacity(frames)));
    let last = Arc::new(Mutex::new(Instant::now()));
    {
        let (log, last) = (log.clone(), last.clone());
        pipeline
            .by_name("sink")
            .unwrap()
            .connect("handoff", false, move |v| {
                let buf = v[1].get::<gst::Buffer>().unwrap();
                let metas = buf
                    .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                    .count();
                let now = Instant::now();
                let dt = {
                    let mut l = last.lock().unwrap();
                    let dt = now.duration_since(*l).as_secs_f64();
                    *l = now;
                    dt
                };
                log.lock().unwrap().push((dt, rss().unwrap_or(0), metas));
                None
            });
    }
    let started = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(1800)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let wall = started.elapsed().as_secs_f64();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), frames, "every frame reached the sink");
    assert!(log.iter().all(|f| f.2 > 0), "every frame carries metas");
    let warm_rss = log[WARM_UP - 1].1;
    let max_rss = log[WARM_UP..].iter().map(|f| f.1).max().unwrap();
    let end_rss = log[frames - 1].1;
    let window = 200;
    let early = median(log[WARM_UP..WARM_UP + window].iter().map(|f| f.0).collect());
    let late = median(log[frames - window..].iter().map(|f| f.0).collect());
    let growth = (max_rss as f64 / warm_rss as f64 - 1.0) * 100.0;
    println!(
        "glipdetect soak: {frames} frames in {wall:.1} s ({:.1} frames/s); resident {warm_rss} kB \
         after {WARM_UP} frames, {end_rss} kB at the end, max {max_rss} kB (+{growth:.2} %); \
         median frame time {:.2} ms early, {:.2} ms late",
        frames as f64 / wall,
        early * 1e3,
        late * 1e3
    );
    assert!(
        growth <= 5.0,
        "resident memory grew {growth:.2} % after the warm-up"
    );
    assert!(
        late <= 2.0 * early,
        "frame time drifted: {:.2} ms -> {:.2} ms",
        early * 1e3,
        late * 1e3
    );
}
