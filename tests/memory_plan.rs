//! The recorded forward and its memory plan (backend/plan.rs): liveness and placement on a
//! hand-made trace, and the tiny model's real trace (same outputs as the plain forward,
//! no two live buffers sharing arena bytes).

use glip_rt::backend::plan::{Interval, MemoryPlan, OpRecord};
use glip_rt::model::glip::Taps;
use glip_rt::testing::{load_golden, E2eGolden};

fn op(reads: &[usize], writes: &[(usize, usize)]) -> OpRecord {
    OpRecord {
        op: "test",
        reads: reads.to_vec(),
        writes: writes.to_vec(),
    }
}

#[test]
fn liveness_in_place_and_recycled_addresses() {
    // 0: A = f(input 9); 1: B = g(A); 2: A += B (in place); 3: C at B's recycled address =
    // h(A); 4: D = k(C, A).
    let trace = [
        op(&[9], &[(100, 1000)]),
        op(&[100], &[(200, 512)]),
        op(&[100, 200], &[(100, 1000)]),
        op(&[100], &[(200, 256)]),
        op(&[200, 100], &[(300, 100)]),
    ];
    let p = MemoryPlan::from_trace(&trace);
    assert_eq!(p.ops, 5);
    // A (ops 0..4, in place at 2), B (1..2), C (3..4, a new buffer at B's address), D (4).
    let spans: Vec<(usize, usize)> = p.buffers.iter().map(|b| (b.start, b.end)).collect();
    assert_eq!(spans, vec![(0, 4), (1, 2), (3, 4), (4, 4)]);
    assert_eq!(p.conflicts(), None);
    assert!(p.peak_bytes >= p.live_bytes_bound);
    // B and C never live together: C reuses B's bytes, so the arena is A + B + D, not all four.
    let sizes: usize = p.buffers.iter().map(|b| b.bytes).sum();
    assert!(p.peak_bytes < sizes, "{} vs {sizes}", p.peak_bytes);
}

#[test]
fn an_overlapping_plan_is_reported() {
    let mut p = MemoryPlan::from_trace(&[op(&[], &[(1, 256)]), op(&[1], &[(2, 256)])]);
    assert_eq!(p.conflicts(), None);
    // Plant the bug: both buffers at offset 0 while both are live.
    p.buffers = vec![
        Interval {
            start: 0,
            end: 1,
            bytes: 256,
            offset: 0,
        },
        Interval {
            start: 1,
            end: 1,
            bytes: 256,
            offset: 0,
        },
    ];
    assert_eq!(p.conflicts(), Some((0, 1)));
}

/// Golden 12's image and its text features encoded by `m`.
fn golden_inputs(
    m: &glip_rt::model::glip::Glip,
) -> (
    glip_rt::model::FeatureMap,
    glip_rt::model::glip::TextFeatures,
) {
    let g = load_golden("12_e2e_tiny").unwrap();
    let ints = |k: &str| -> Vec<i32> {
        g[k].to_f32_vec()
            .unwrap()
            .iter()
            .map(|&v| v as i32)
            .collect()
    };
    let text = m
        .encode_text(&ints("input/input_ids"), &ints("input/attention_mask"))
        .unwrap();
    let image = glip_rt::model::FeatureMap::from_tensor(&g["input/image"]).unwrap();
    (image, text)
}

#[test]
fn tiny_model_plan_is_valid_and_changes_nothing() {
    let m = E2eGolden::load("12_e2e_tiny")
        .unwrap()
        .model_on(glip_rt::backend::host_shared())
        .unwrap();
    let (image, text) = golden_inputs(&m);
    let plain = m.forward(&image, &text, &mut Taps::disabled()).unwrap();
    let (out, plan) = m.forward_planned(&image, &text).unwrap();
    let host = |v: &[glip_rt::Tensor]| -> Vec<Vec<f32>> {
        v.iter().map(|t| t.to_f32_vec().unwrap()).collect()
    };
    assert_eq!(host(&out.bbox_reg), host(&plain.bbox_reg));
    assert_eq!(
        host(&out.dot_product_logits),
        host(&plain.dot_product_logits)
    );
    assert_eq!(plan.conflicts(), None);
    let sizes: usize = plan.buffers.iter().map(|b| b.bytes).sum();
    println!(
        "tiny model: {} ops, {} buffers, arena {} B, bound {} B, unplanned {sizes} B",
        plan.ops,
        plan.buffers.len(),
        plan.peak_bytes,
        plan.live_bytes_bound
    );
    assert!(plan.ops > 100, "{} ops", plan.ops);
    assert!(plan.peak_bytes >= plan.live_bytes_bound);
    assert!(plan.peak_bytes * 2 < sizes, "the plan reuses memory");
}

/// The same forward recorded on the emulated device (buffers identified by allocation, not
/// host address): the same ops as on the CPU and a valid plan. CUDA ops write new buffers
/// where the CPU's elementwise ops work in place, so the device plan has more buffers.
#[test]
fn the_device_forward_records_the_same_ops_and_a_valid_plan() {
    let golden = E2eGolden::load("12_e2e_tiny").unwrap();
    let mut plans = Vec::new();
    for (name, be) in glip_rt::testing::test_backends() {
        if name == "cuda" {
            continue; // the emulated device stands for every CUDA device here
        }
        let m = golden.model_on(be.clone()).unwrap();
        let (image, text) = golden_inputs(&m);
        // (The recorder only delegates: the CPU test above shows the outputs unchanged.)
        let (out, plan) = m.forward_planned(&image, &text).unwrap();
        let boxes = be.to_host(&out.bbox_reg[0]).unwrap().to_f32_vec().unwrap();
        assert!(boxes.iter().all(|v| v.is_finite()), "{name}");
        assert_eq!(plan.conflicts(), None, "{name}");
        assert!(plan.peak_bytes >= plan.live_bytes_bound, "{name}");
        println!(
            "{name}: {} ops, {} buffers, arena {} B (bound {} B)",
            plan.ops,
            plan.buffers.len(),
            plan.peak_bytes,
            plan.live_bytes_bound
        );
        plans.push((name, plan));
    }
    let [(_, cpu), (_, emu)] = &plans[..] else {
        panic!(
            "expected the CPU and the emulated device, got {}",
            plans.len()
        );
    };
    assert_eq!(emu.ops, cpu.ops, "one model, the same ops on every backend");
    assert!(emu.buffers.len() > cpu.buffers.len());
}
