//! `glipdetect` in real GStreamer pipelines with the tiny golden model on the CPU:
//! every format it takes, through `gst-launch-1.0` as a user runs it, a prompt changed while
//! playing, and bad settings and caps. Sizes, caption and model come from the end-to-end
//! golden's files.

use glip_rt::pixfmt::PixFmt;
use glip_rt::testing::{testdata, E2eGolden, TempDir};
use gst::prelude::*;
use gst_video::prelude::*;
use std::sync::{Arc, Mutex, Once};

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        gstglip::plugin_register_static().unwrap();
    });
}

fn golden() -> E2eGolden {
    E2eGolden::all().unwrap().remove(0)
}

/// `glipdetect`'s model properties for the golden (no prompt).
fn model_props(g: &E2eGolden) -> String {
    format!(
        "config=\"{}\" weights=\"{}\" bert-config=\"{}\" device=cpu",
        g.config.display(),
        g.weights.display(),
        testdata().join("tiny_bert_config.json").display()
    )
}

/// What a pipeline run gave: each buffer at the sink, the element's messages, warnings, the
/// first error.
#[derive(Default)]
struct Run {
    buffers: Vec<gst::Buffer>,
    caps: Option<gst::Caps>,
    messages: Vec<gst::Structure>,
    warnings: Vec<String>,
    error: Option<String>,
}

/// Runs `desc` (its sink is `fakesink name=sink signal-handoffs=true`) to its end; `on_buffer`
/// sees each buffer's index, the buffer and the pipeline as it arrives (on the streaming
/// thread). A pipeline that cannot be made (caps the element does not take) is the run's
/// error.
fn run(
    desc: &str,
    on_buffer: impl Fn(usize, &gst::BufferRef, &gst::Pipeline) + Send + Sync + 'static,
) -> Run {
    run_fed(desc, |_| {}, on_buffer)
}

/// [`run`], with `feed` called on a thread of its own once the pipeline plays (to push
/// buffers into an appsrc).
fn run_fed(
    desc: &str,
    feed: impl FnOnce(&gst::Pipeline) + Send + 'static,
    on_buffer: impl Fn(usize, &gst::BufferRef, &gst::Pipeline) + Send + Sync + 'static,
) -> Run {
    init();
    let pipeline = match gst::parse::launch(desc) {
        Ok(p) => p.downcast::<gst::Pipeline>().unwrap(),
        Err(e) => {
            return Run {
                error: Some(e.to_string()),
                ..Run::default()
            }
        }
    };
    let out = Arc::new(Mutex::new(Run::default()));
    let sink = pipeline.by_name("sink").unwrap();
    {
        let out = out.clone();
        let weak = pipeline.downgrade();
        sink.connect("handoff", false, move |v| {
            let buf = v[1].get::<gst::Buffer>().unwrap();
            let pad = v[2].get::<gst::Pad>().unwrap();
            let i = {
                let mut o = out.lock().unwrap();
                o.buffers.push(buf.clone());
                o.caps = pad.current_caps();
                o.buffers.len() - 1
            };
            if let Some(p) = weak.upgrade() {
                on_buffer(i, buf.as_ref(), &p);
            }
            None
        });
    }
    let bus = pipeline.bus().unwrap();
    // A failure to start is answered on the bus (the loop below reads why).
    let started = pipeline.set_state(gst::State::Playing).is_ok();
    let feeder = started.then(|| {
        let p = pipeline.clone();
        std::thread::spawn(move || feed(&p))
    });
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        use gst::MessageView;
        let mut o = out.lock().unwrap();
        match msg.view() {
            MessageView::Eos(_) => break,
            MessageView::Error(e) => {
                o.error = Some(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            MessageView::Warning(w) => o.warnings.push(w.error().to_string()),
            MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "glipdetect") {
                    o.messages.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    let run = std::mem::take(&mut *out.lock().unwrap());
    run
}

/// The phrases of the detections a frame's message lists, with their boxes and scores.
fn message_detections(s: &gst::StructureRef) -> Vec<(String, u32, f32, [f32; 4])> {
    let json: serde_json::Value =
        serde_json::from_str(s.get::<&str>("detections").unwrap()).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b: Vec<f32> = d["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (
                d["phrase"].as_str().unwrap().to_string(),
                d["label"].as_u64().unwrap() as u32,
                d["score"].as_f64().unwrap() as f32,
                [b[0], b[1], b[2], b[3]],
            )
        })
        .collect()
}

/// One region-of-interest meta: (roi_type, rect, label_id, confidence).
type Roi = (String, (u32, u32, u32, u32), u32, f64);

/// Each buffer's region-of-interest metas.
fn rois(buf: &gst::BufferRef) -> Vec<Roi> {
    buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let p = m.param("detection").expect("a detection parameter");
            (
                m.roi_type().to_string(),
                m.rect(),
                p.get::<u32>("label_id").unwrap(),
                p.get::<f64>("confidence").unwrap(),
            )
        })
        .collect()
}

/// Every raw format the element takes: each frame's metas and message equal the Rust API's
/// detections on the same frame's pixels (bit for bit), timestamps pass through untouched.
#[test]
fn every_format_gets_its_detections_as_metas_and_messages() {
    let g = golden();
    let formats = [
        ("RGB", PixFmt::Rgb24),
        ("BGR", PixFmt::Bgr24),
        ("RGBA", PixFmt::Rgba),
        ("BGRx", PixFmt::Bgra),
        ("NV12", PixFmt::Nv12),
        ("I420", PixFmt::Yuv420p),
    ];
    let mut det = g
        .detector_builder(glip_rt::DeviceChoice::Cpu)
        .build()
        .unwrap();
    det.set_prompt(&g.caption).unwrap();
    let frames = 3;
    for (name, fmt) in formats {
        // An odd width: padded rows in every format.
        let desc = format!(
            "videotestsrc num-buffers={frames} pattern=ball ! \
             video/x-raw,format={name},width=77,height=60,framerate=25/1 ! \
             glipdetect {} prompt=\"{}\" ! fakesink name=sink signal-handoffs=true sync=false",
            model_props(&g),
            g.caption
        );
        let r = run(&desc, |_, _, _| {});
        assert!(r.error.is_none(), "{name}: {:?}", r.error);
        assert_eq!(r.buffers.len(), frames, "{name}");
        assert_eq!(r.messages.len(), frames, "{name}: one message per frame");
        let info = gst_video::VideoInfo::from_caps(r.caps.as_ref().unwrap()).unwrap();
        for (i, (buf, msg)) in r.buffers.iter().zip(&r.messages).enumerate() {
            let what = format!("{name} frame {i}");
            // videotestsrc's timestamps, untouched: frame i at i/25 s, 1/25 s long.
            assert_eq!(
                buf.pts(),
                Some(gst::ClockTime::from_mseconds(40 * i as u64)),
                "{what}"
            );
            assert_eq!(
                buf.duration(),
                Some(gst::ClockTime::from_mseconds(40)),
                "{what}"
            );
            assert_eq!(msg.get::<u64>("frame").unwrap(), i as u64, "{what}");
            assert_eq!(
                msg.get::<u64>("pts").unwrap(),
                buf.pts().unwrap().nseconds()
            );
            // The Rust API on this buffer's pixels.
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
            let planes: Vec<(&[u8], usize)> = (0..frame.n_planes())
                .map(|p| {
                    (
                        frame.plane_data(p).unwrap(),
                        frame.plane_stride()[p as usize] as usize,
                    )
                })
                .collect();
            let want = det.detect_frame(fmt, 77, 60, &planes).unwrap();
            assert!(!want.is_empty(), "{what}: nothing to compare");
            let got = message_detections(msg);
            assert_eq!(got.len(), want.len(), "{what}");
            for (gd, wd) in got.iter().zip(&want) {
                assert_eq!(gd.0, wd.phrase, "{what}");
                assert_eq!(gd.1, wd.label, "{what}");
                assert_eq!(gd.2.to_bits(), wd.score.to_bits(), "{what}");
                assert_eq!(gd.3.map(f32::to_bits), wd.bbox.map(f32::to_bits), "{what}");
            }
            let metas = rois(buf.as_ref());
            assert_eq!(metas.len(), want.len(), "{what}: one meta per detection");
            for (m, wd) in metas.iter().zip(&want) {
                assert_eq!(m.0, wd.phrase, "{what}");
                assert_eq!(m.2, wd.label, "{what}");
                assert_eq!(m.3, f64::from(wd.score), "{what}");
                let (x, y, w, h) = m.1;
                // Inside the frame, around the box.
                assert!(
                    x + w <= 77 && y + h <= 60 && w >= 1 && h >= 1,
                    "{what}: {:?}",
                    m.1
                );
                assert!(
                    (x as f32 - wd.bbox[0].max(0.0)).abs() <= 1.0,
                    "{what}: {:?} {:?}",
                    m.1,
                    wd.bbox
                );
            }
        }
    }
}

/// A prompt set while playing is used from the next frame; an empty one posts a warning and
/// the previous prompt stays; a threshold set while playing drops low scores from the next
/// frame (videotestsrc's frames are all the same picture: the same detections before it).
#[test]
fn prompt_changes_while_playing() {
    let g = golden();
    let desc = format!(
        "videotestsrc num-buffers=6 pattern=colors ! video/x-raw,format=NV12,width=64,height=48 ! \
         glipdetect name=d {} prompt=\"{}\" ! fakesink name=sink signal-handoffs=true sync=false",
        model_props(&g),
        g.caption
    );
    let threshold = Arc::new(Mutex::new(0.0f32));
    let t = threshold.clone();
    let r = run(&desc, move |i, buf, p| {
        let d = p.by_name("d").unwrap();
        match i {
            1 => d.set_property("prompt", "a zebra. a kite."),
            3 => d.set_property("prompt", ""),
            4 => {
                // The median score of this frame.
                let mut c: Vec<f64> = rois(buf).iter().map(|m| m.3).collect();
                c.sort_by(f64::total_cmp);
                let m = c[c.len() / 2] as f32;
                *t.lock().unwrap() = m;
                d.set_property("threshold", m);
            }
            _ => {}
        }
    });
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.buffers.len(), 6);
    let phrases = |i: usize| -> Vec<String> {
        rois(r.buffers[i].as_ref())
            .into_iter()
            .map(|m| m.0)
            .collect()
    };
    for i in 0..2 {
        assert!(
            !phrases(i).is_empty() && phrases(i).iter().all(|p| g.caption.contains(p.as_str())),
            "frame {i}: {:?}",
            phrases(i)
        );
    }
    for i in 2..6 {
        let p = phrases(i);
        assert!(
            p.iter().all(|p| p == "a zebra" || p == "a kite"),
            "frame {i}: {p:?}"
        );
    }
    assert!(!phrases(2).is_empty());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("not used") && w.contains("a zebra")),
        "{:?}",
        r.warnings
    );
    // Frame 5: frame 4's detections from its median score up.
    let t = f64::from(*threshold.lock().unwrap());
    let (before, after) = (rois(r.buffers[4].as_ref()), rois(r.buffers[5].as_ref()));
    assert!(after.iter().all(|m| m.3 >= t), "{t}: {after:?}");
    assert_eq!(after.len(), before.iter().filter(|m| m.3 >= t).count());
    assert!(
        after.len() < before.len(),
        "{t}: {} of {}",
        after.len(),
        before.len()
    );
}

/// `phrase-thresholds` set while playing: from the next frame that phrase's detections are
/// kept from its own threshold and the others from `threshold` (frame 0's detections filtered
/// so: the frames are all the same picture). An unreadable value posts a warning and keeps
/// the previous; a phrase the prompt lacks posts a warning and is ignored.
#[test]
fn phrase_thresholds_while_playing() {
    let g = golden();
    let desc = format!(
        "videotestsrc num-buffers=5 pattern=colors ! video/x-raw,format=RGB,width=64,height=48 ! \
         glipdetect name=d {} prompt=\"{}\" ! fakesink name=sink signal-handoffs=true sync=false",
        model_props(&g),
        g.caption
    );
    let case = Arc::new(Mutex::new(None));
    let c = case.clone();
    let r = run(&desc, move |i, buf, p| {
        let d = p.by_name("d").unwrap();
        match i {
            0 => {
                let pairs: Vec<(String, f32)> =
                    rois(buf).into_iter().map(|m| (m.0, m.3 as f32)).collect();
                let (target, global, own) =
                    glip_rt::testing::phrase_threshold_case(&pairs).unwrap();
                d.set_property("threshold", global);
                let json = serde_json::json!({ target.as_str(): own }).to_string();
                d.set_property("phrase-thresholds", json.as_str());
                *c.lock().unwrap() = Some((target, global, own));
            }
            2 => d.set_property("phrase-thresholds", "{not json"),
            3 => d.set_property("phrase-thresholds", r#"{"no such phrase": 0.1}"#),
            _ => {}
        }
    });
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.buffers.len(), 5);
    let (target, global, own) = case.lock().unwrap().clone().unwrap();
    let all = rois(r.buffers[0].as_ref());
    let filtered = |t: &str| -> Vec<Roi> {
        all.iter()
            .filter(|m| m.3 as f32 >= if m.0 == t { own } else { global })
            .cloned()
            .collect()
    };
    let want = filtered(&target);
    assert!(want.len() < all.len());
    assert!(want.len() > all.iter().filter(|m| m.3 as f32 >= global).count());
    for i in 1..4 {
        assert_eq!(rois(r.buffers[i].as_ref()), want, "frame {i}");
    }
    // Frame 4: only the global threshold (the phrase named is not the prompt's).
    assert_eq!(rois(r.buffers[4].as_ref()), filtered(""));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("phrase-thresholds") && w.contains("not used")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("no such phrase") && w.contains("not phrases of the prompt")),
        "{:?}",
        r.warnings
    );
}

/// `model=DIR` (a model folder) gives the detections of naming the files one by one.
#[test]
fn a_model_folder_property_stands_for_the_files() {
    let g = golden();
    let dir = g.model_dir("glipdetect-model");
    let src =
        "videotestsrc num-buffers=2 pattern=colors ! video/x-raw,format=RGB,width=64,height=48";
    let sink = "fakesink name=sink signal-handoffs=true sync=false";
    let by_files = format!(
        "{src} ! glipdetect {} prompt=\"{}\" ! {sink}",
        model_props(&g),
        g.caption
    );
    let by_dir = format!(
        "{src} ! glipdetect model=\"{}\" device=cpu prompt=\"{}\" ! {sink}",
        dir.path().display(),
        g.caption
    );
    let (a, b) = (run(&by_files, |_, _, _| {}), run(&by_dir, |_, _, _| {}));
    assert!(
        a.error.is_none() && b.error.is_none(),
        "{:?} {:?}",
        a.error,
        b.error
    );
    assert_eq!(a.buffers.len(), 2);
    assert!(!rois(a.buffers[0].as_ref()).is_empty());
    for (x, y) in a.buffers.iter().zip(&b.buffers) {
        assert_eq!(rois(x.as_ref()), rois(y.as_ref()));
    }
}

/// A buffer shorter than its caps say (between two good frames): a warning naming the frame,
/// and it passes on without detections; the frames around it keep theirs.
#[test]
fn a_short_buffer_is_a_warning_and_the_stream_goes_on() {
    let g = golden();
    let (w, h) = (32usize, 24usize);
    let desc = format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate=0/1 ! \
         glipdetect {} prompt=\"{}\" ! fakesink name=sink signal-handoffs=true sync=false",
        model_props(&g),
        g.caption
    );
    let feed = move |p: &gst::Pipeline| {
        let src = p.by_name("src").unwrap();
        for (i, bytes) in [w * h * 3, 10, w * h * 3].into_iter().enumerate() {
            let pixels: Vec<u8> = (0..bytes).map(|k| (k * 7 % 251) as u8).collect();
            let mut buf = gst::Buffer::from_mut_slice(pixels);
            buf.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(100 * i as u64));
            let _ = src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&buf]);
        }
        let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    };
    let r = run_fed(&desc, feed, |_, _, _| {});
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.buffers.len(), 3, "every buffer passes on");
    let metas: Vec<usize> = r.buffers.iter().map(|b| rois(b.as_ref()).len()).collect();
    assert!(metas[0] > 0 && metas[1] == 0 && metas[2] > 0, "{metas:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("frame 1") && w.contains("10 bytes")),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        r.buffers[1].size(),
        10,
        "the bad buffer passes on unchanged"
    );
}

/// Bad settings and caps stop the pipeline with an error naming what is wrong.
#[test]
fn bad_settings_and_caps_are_errors() {
    let g = golden();
    let sink = "fakesink name=sink signal-handoffs=true";
    let src = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=32,height=32";
    let missing = g.weights.with_file_name("no-such-weights.safetensors");
    let cases = [
        (
            format!(
                "{src} ! glipdetect config=\"{}\" weights=\"{}\" prompt=\"a cat.\" ! {sink}",
                g.config.display(),
                missing.display()
            ),
            "no-such-weights.safetensors",
        ),
        (
            format!("{src} ! glipdetect {} ! {sink}", model_props(&g)),
            "prompt property is not set",
        ),
        (
            format!("{src} ! glipdetect prompt=\"a cat.\" ! {sink}"),
            "config property (or model, a model folder) is not set",
        ),
        (
            format!(
                "{src} ! glipdetect model=\"{}\" prompt=\"a cat.\" ! {sink}",
                g.config.display()
            ),
            "not a folder",
        ),
        (
            format!(
                "{src} ! glipdetect {} prompt=\"a cat.\" device=tpu ! {sink}",
                model_props(&g)
            ),
            "tpu",
        ),
        (
            format!(
                "videotestsrc num-buffers=2 ! video/x-raw,format=GRAY16_LE,width=32,height=32 ! \
                 glipdetect {} prompt=\"a cat.\" ! {sink}",
                model_props(&g)
            ),
            "can't handle caps video/x-raw, format=(string)GRAY16_LE",
        ),
    ];
    for (desc, want) in cases {
        let r = run(&desc, |_, _, _| {});
        let e = r.error.unwrap_or_else(|| panic!("{desc}: no error"));
        assert!(e.contains(want), "{desc}: {e}");
        assert!(r.buffers.is_empty(), "{desc}");
    }
}

/// The plugin as a user loads it: gst-launch-1.0 with GST_PLUGIN_PATH, `-m` printing the
/// element's messages, fakesink printing each buffer's metas.
#[test]
fn gst_launch_runs_the_plugin_file() {
    let g = golden();
    let tmp = TempDir::new("glipdetect-launch");
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let lib = [deps.clone(), deps.parent().unwrap().to_path_buf()]
        .into_iter()
        .map(|d| d.join("libgstglip.so"))
        .find(|p| p.exists())
        .expect("libgstglip.so (the plugin) not built");
    // Only the plugin in the path (the deps folder holds other libraries).
    std::fs::copy(&lib, tmp.join("libgstglip.so")).unwrap();
    let mut args: Vec<String> = vec![
        "-m".into(),
        "videotestsrc".into(),
        "num-buffers=3".into(),
        "!".into(),
        "video/x-raw,width=64,height=64".into(),
        "!".into(),
        "videoconvert".into(),
        "!".into(),
        "glipdetect".into(),
    ];
    args.extend(model_props(&g).split(' ').map(|a| a.replace('"', "")));
    args.push(format!("prompt={}", g.caption));
    args.extend(["!", "fakesink", "silent=false", "-v"].map(String::from));
    let out = std::process::Command::new("gst-launch-1.0")
        .args(&args)
        .env("GST_PLUGIN_PATH", tmp.path())
        .env("GST_REGISTRY", tmp.join("registry.bin"))
        .output()
        .expect("gst-launch-1.0 (gstreamer1.0-tools) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        assert!(
            text.contains(&format!("glipdetect, frame=(guint64){i}")),
            "frame {i}:\n{text}"
        );
    }
    assert!(text.contains("GstVideoRegionOfInterestMeta"), "{text}");
}
