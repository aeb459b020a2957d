//! The recorded forward and its memory plan (backend/plan.rs): liveness and placement on a
//! hand-made trace, and the tiny model's real trace (same outputs as the plain forward,
//! no two live buffers sharing arena bytes); a small device forward replayed from its arena
//! (backend/executor.rs) a thousand times.

use glip_rt::backend::plan::{Interval, MemoryPlan, OpRecord};
use glip_rt::model::glip::Taps;
use glip_rt::testing::{load_golden, E2eGolden};

fn op(reads: &[usize], writes: &[(usize, usize)]) -> OpRecord {
    OpRecord {
        op: "test",
        reads: reads.to_vec(),
        writes: writes.to_vec(),
        allocs_after: 0,
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
/// host address): the same ops as on the CPU and a valid plan. The ops that take their input
/// by value compute in place on both backends, so one plan describes both: the same buffers
/// with the same lifetimes (their bytes differ: f16 activations on the device, f32 here).
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
    let lifetimes = |p: &glip_rt::backend::plan::MemoryPlan| -> Vec<(usize, usize)> {
        p.buffers.iter().map(|b| (b.start, b.end)).collect()
    };
    assert_eq!(
        lifetimes(emu),
        lifetimes(cpu),
        "the same in-place rules on every backend: one plan's buffers and lifetimes"
    );
}

/// A small device forward (upload, linear, GELU, LayerNorm, a residual add, an input dead
/// after its first use) recorded once and replayed 1,000 times from its arena on the
/// emulated device: every replay gives the op-by-op result bit for bit, and after the arena
/// is made no replay allocates device memory (so device memory is flat). Planting the bug
/// of a plan that puts every buffer at offset 0 changes the result: the comparison sees
/// buffers that share bytes while live.
#[test]
fn a_replayed_device_forward_matches_op_by_op_and_allocates_nothing() {
    use glip_rt::backend::cuda::{emu::EMULATOR_BUILT, CudaBackend, EmuChecks};
    use glip_rt::backend::executor::Executor;
    use glip_rt::backend::ops::Backend;
    use glip_rt::backend::plan::{DeviceArena, Slot};
    use glip_rt::tensor::Tensor;
    use std::sync::Arc;
    if !EMULATOR_BUILT {
        eprintln!("skipped: this build has no emulated device");
        return;
    }
    let be = CudaBackend::emulated_with(EmuChecks::Fast);
    let mut seed = 0x9E37_79B9u32;
    let mut rand = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let (rows, k, n) = (24, 40, 32);
    let x = Tensor::from_f32(&[rows, k], rand(rows * k)).unwrap();
    let x2 = Tensor::from_f32(&[rows, n], rand(rows * n)).unwrap();
    let w = be
        .weight(&Tensor::from_f32(&[n, k], rand(n * k)).unwrap())
        .unwrap();
    let b = be
        .weight(&Tensor::from_f32(&[n], rand(n)).unwrap())
        .unwrap();
    let lw = be
        .weight(&Tensor::from_f32(&[n], rand(n)).unwrap())
        .unwrap();
    let lb = be
        .weight(&Tensor::from_f32(&[n], rand(n)).unwrap())
        .unwrap();
    let forward = |be: &dyn Backend| -> glip_rt::Result<(Vec<f32>, Vec<usize>)> {
        let a = be.upload(&x.to_f16()?)?;
        let h = be.linear(&a, &w, Some(&b))?;
        drop(a);
        let g = be.gelu(h)?;
        let y = be.layer_norm(&g, &lw, &lb, 1e-5)?;
        let r = be.upload(&x2.to_f16()?)?;
        let z = be.add(y, &r)?;
        let z = be.add(z, &g)?;
        Ok((be.to_host(&z)?.to_f32_vec()?, Vec::new()))
    };
    let ex = Executor::<u32>::default();
    let want = ex.run(&be, 7, forward).unwrap();
    assert!(want.iter().all(|v| v.is_finite()));
    let own = be.own_allocations();
    let weights = be.memory().held;
    let mut held = Vec::new();
    for i in 0..1000 {
        let got = ex.run(&be, 7, forward).unwrap();
        assert!(got == want, "replay {i} differs from the recorded run");
        held.push(be.memory().held);
    }
    assert_eq!(
        be.own_allocations() - own,
        1,
        "1,000 replays allocate the arena once and nothing else"
    );
    // Device memory stays flat: the weights and the arena, the same after every replay.
    let arena = ex.plans()[0].1.arena_bytes.unwrap();
    assert!(
        held.iter().all(|&h| h == weights + arena),
        "device memory over 1,000 replays: first {:?}, last {:?}, weights {weights} + arena {arena}",
        &held[..3],
        &held[held.len() - 3..]
    );
    assert!(be.memory().peak >= weights + arena);
    let plans = ex.plans();
    let [(7, info)] = &plans[..] else {
        panic!("one bucket expected, got {}", plans.len());
    };
    assert_eq!((info.replays, info.op_by_op), (1000, 0));
    assert_eq!(info.broken, None);
    let plan = info.device.clone().unwrap();
    assert_eq!(plan.conflicts(), None);
    assert_eq!(info.arena_bytes, Some(plan.peak_bytes));
    let unplanned: usize = plan.buffers.iter().map(|b| b.bytes).sum();
    assert!(
        plan.peak_bytes < unplanned,
        "buffers share the arena: {} of {unplanned} bytes",
        plan.peak_bytes
    );
    // The planted bug: every allocation at offset 0.
    let arena = be.new_arena(plan.peak_bytes).unwrap();
    let zero: Arc<[Slot]> = plan
        .slots
        .iter()
        .map(|s| Slot { offset: 0, ..*s })
        .collect();
    be.start_replay(arena, zero).unwrap();
    let bad = forward(&be);
    be.finish_replay().unwrap();
    assert!(
        bad.unwrap().0 != want,
        "aliased buffers must change the result"
    );
}
