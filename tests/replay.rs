//! The executor on the whole pipeline (backend/executor.rs): on the emulated device the
//! first frame of a shape is recorded and later frames are replayed from the shape's arena,
//! with the same detections as the recorded (op-by-op) frame, bit for bit, and no device
//! allocation or memset. Every e2e golden's model, photo and prompt, at a reduced input size (the
//! emulated device runs the golden's own 320-pixel forward in ~45 s; golden_e2e does that).
//! With GLIP_REQUIRE_GPU=1 (scripts/gpu-check.sh) the same on GPU 0 instead.

use glip_rt::testing::E2eGolden;

#[test]
fn replayed_frames_give_the_recorded_frames_detections_without_allocating() {
    use glip_rt::DeviceChoice;
    // On the GPU check's machine the GPU alone (its time is budgeted; CI covers the emulator).
    let devices = if glip_rt::testing::gpu_required() {
        vec![DeviceChoice::Cuda(0)]
    } else if glip_rt::backend::cuda::emu::EMULATOR_BUILT {
        vec![DeviceChoice::Emulated]
    } else {
        Vec::new()
    };
    if devices.is_empty() {
        eprintln!("skipped: this build has no emulated device and no GPU is required");
        return;
    }
    // The only test of this binary, so no other thread reads the environment meanwhile.
    std::env::set_var("GLIP_EMU_CHECKS", "fast");
    for (device, g) in devices
        .iter()
        .flat_map(|d| E2eGolden::all().unwrap().into_iter().map(move |g| (*d, g)))
    {
        let mut det = g
            .detector_builder(device)
            .input_size(96, Some(128))
            .build()
            .unwrap();
        det.set_prompt_with_phrases(&g.caption, &g.phrases).unwrap();
        let img = glip_rt::preprocess::load_image(&g.photo, true).unwrap();
        let recorded = det.detect(&img).unwrap();
        assert!(!recorded.is_empty(), "{}: no detections", g.name);
        let be = det.model().backend().clone();
        let arena = be
            .device_arena()
            .expect("the emulated device plans its memory");
        let (own, zeroed) = (arena.own_allocations(), arena.zeroed_allocations());
        let mut held = Vec::new();
        for frame in 1..=2 {
            let replayed = det.detect(&img).unwrap();
            assert!(
                replayed == recorded,
                "{}: frame {frame} (replayed) differs from frame 0 (recorded)",
                g.name
            );
            held.push(arena.memory().held);
        }
        assert_eq!(held[0], held[1], "{}: device memory grew", g.name);
        assert_eq!(
            arena.own_allocations() - own,
            1,
            "{}: two replays allocate the arena once and nothing else",
            g.name
        );
        // Workspaces are written before they are read: no memset per frame (on the emulated
        // device their memory starts as 0xFF bytes, so a read of an unwritten element shows).
        assert_eq!(
            arena.zeroed_allocations() - zeroed,
            0,
            "{}: a replayed frame zeroes memory",
            g.name
        );
        let plans = det.plans();
        let [(key, info)] = &plans[..] else {
            panic!("{}: one shape, {} plans", g.name, plans.len());
        };
        assert_eq!((info.replays, info.op_by_op), (2, 0), "{}", g.name);
        assert_eq!(info.broken, None, "{}", g.name);
        let plan = info.device.clone().unwrap();
        assert_eq!(plan.conflicts(), None, "{}", g.name);
        let unplanned: usize = plan.buffers.iter().map(|b| b.bytes).sum();
        println!(
            "{} on {device:?}: {key:?}: {} ops, {} allocations ({} transient) in an arena of {:.1} MiB \
             (bound {:.1} MiB, {:.1} MiB unplanned), {} detections",
            g.name,
            plan.ops,
            plan.slots.len(),
            plan.transient,
            plan.peak_bytes as f64 / (1 << 20) as f64,
            plan.live_bytes_bound as f64 / (1 << 20) as f64,
            unplanned as f64 / (1 << 20) as f64,
            recorded.len()
        );
    }
    // A prompt over 256 tokens (golden 01's 130 class names): the image part is its own
    // stage, recorded and replayed once per frame; each chunk's grounded part replays too.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(glip_rt::testing::testdata().join("golden/01_tokenizer.json"))
            .unwrap(),
    )
    .unwrap();
    let caption = meta["prompts"]["long"]["caption"].as_str().unwrap();
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    for device in devices {
        let mut det = g
            .detector_builder(device)
            .input_size(64, Some(96))
            .build()
            .unwrap();
        det.set_prompt(caption).unwrap();
        assert!(det.prompt_chunks().len() >= 2);
        let img = glip_rt::preprocess::load_image(&g.photo, true).unwrap();
        let recorded = det.detect(&img).unwrap();
        let replayed = det.detect(&img).unwrap();
        assert!(
            replayed == recorded,
            "{device:?}: long prompt, replay differs"
        );
        for (key, info) in det.plans() {
            assert_eq!(
                (info.replays, info.op_by_op, info.broken.as_deref()),
                (1, 0, None),
                "{device:?} {key:?}"
            );
        }
        println!(
            "long prompt on {device:?}: {} plans replayed, {} detections",
            det.plans().len(),
            recorded.len()
        );
    }
}
