//! CUDA graphs of replayed forwards (backend/cuda/graph.rs) on the whole pipeline: replayed
//! frames run as graph launches and give the detections of the same detector without graphs,
//! bit for bit; a frame whose launches differ from the captured ones (another prompt of the
//! same length, so the same arena) runs those launches one by one with the right result and
//! is captured again. On the emulated device a graph is the recorded launch list, run at the
//! segment's end as a GPU runs its graph; with GLIP_REQUIRE_GPU=1 (scripts/gpu-check.sh)
//! the same on GPU 0 with driver graphs.

use glip_rt::backend::cuda::graph::GraphStats;
use glip_rt::testing::E2eGolden;
use glip_rt::{Detection, DeviceChoice};

/// The one bucket's graph statistics.
fn stats(det: &glip_rt::Detector) -> GraphStats {
    let plans = det.plans();
    let [(_, info)] = &plans[..] else {
        panic!("one shape expected, {} plans", plans.len());
    };
    assert_eq!(info.broken, None);
    info.graphs.clone().unwrap_or_default()
}

#[test]
fn graph_replays_give_the_detections_of_launch_by_launch_replays() {
    let device = if glip_rt::testing::gpu_required() {
        DeviceChoice::Cuda(0)
    } else if glip_rt::backend::cuda::emu::EMULATOR_BUILT {
        DeviceChoice::Emulated
    } else {
        eprintln!("skipped: this build has no emulated device and no GPU is required");
        return;
    };
    // The only test of this binary, so no other thread reads the environment meanwhile.
    std::env::set_var("GLIP_EMU_CHECKS", "fast");
    let g = E2eGolden::load("12_e2e_tiny").unwrap();
    let img = glip_rt::preprocess::load_image(&g.photo, true).unwrap();
    // Another picture of the same size (the same bucket): the photo upside down.
    let row = 3 * img.width;
    let flipped = glip_rt::preprocess::RgbImage8::new(
        img.width,
        img.height,
        img.data.chunks(row).rev().flatten().copied().collect(),
    )
    .unwrap();
    let build = |graphs: bool| {
        if graphs {
            std::env::remove_var("GLIP_CUDA_GRAPHS");
        } else {
            std::env::set_var("GLIP_CUDA_GRAPHS", "0");
        }
        let det = g
            .detector_builder(device)
            .input_size(64, Some(96))
            .threshold(0.0)
            .build()
            .unwrap();
        std::env::remove_var("GLIP_CUDA_GRAPHS");
        det
    };
    // Two prompts of the same number of tokens.
    let prompts = ["person. dog.", "horse. cat."];
    let mut plain = build(false);
    let mut graphed = build(true);
    let run = |det: &mut glip_rt::Detector, prompt: &str| -> Vec<Vec<Detection>> {
        det.set_prompt(prompt).unwrap();
        [&img, &img, &flipped]
            .iter()
            .map(|im| det.detect(im).unwrap())
            .collect()
    };

    let want = run(&mut plain, prompts[0]);
    assert!(want.iter().all(|d| !d.is_empty()), "no detections");
    assert_ne!(want[0], want[2], "the flipped photo gives other detections");
    let off = stats(&plain);
    assert_eq!(
        (off.captured, off.graph_launches),
        (0, 0),
        "graphs off: {off:?}"
    );

    let got = run(&mut graphed, prompts[0]);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(
            w == g,
            "frame {i}: graph replay differs from launch by launch"
        );
    }
    // Frame 0 recorded, frame 1 captured, frame 2 (another picture) one graph launch: the
    // uploads (image, masks, index tables) are staged and join the graph, so nothing cuts
    // the frame before the final download.
    let s = stats(&graphed);
    assert_eq!(s.captured, 1, "one segment per frame: {s:?}");
    assert_eq!(s.off, None);
    assert_eq!((s.misses, s.launches), (0, 0), "{s:?}");
    assert_eq!(s.graph_launches, s.captured, "{s:?}");
    assert!(s.launches_in_graphs > 100, "{s:?}");
    println!("{device:?}, prompt 1: {s:?}");

    // The second prompt: the text features sit elsewhere, so the launches that read them
    // differ from the graphs': those segments run launch by launch, then are captured again.
    let want = run(&mut plain, prompts[1]);
    let got = run(&mut graphed, prompts[1]);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(w == g, "second prompt, frame {i}: graph replay differs");
    }
    let t = stats(&graphed);
    assert!(t.misses > 0 && t.launches > 0, "{t:?}");
    assert_eq!(
        t.misses,
        t.captured - s.captured,
        "each miss captured again: {t:?}"
    );
    assert!(t.graph_launches > s.graph_launches, "{t:?}");
    assert_eq!(t.off, None);
    println!("{device:?}, prompt 2: {t:?}");
}
