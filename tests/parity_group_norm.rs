//! GPU parity of kernels/group_norm.cu against the CPU twin: all five GLIP-T pyramid levels
//! (100x168 .. 7x11) in one grouped launch, 256 channels, 16 groups, batch 1 and 2.

use glip_rt::backend::cpu::group_norm::{group_norm_levels, GnActivation, GnLevel, GroupNormShape};
use glip_rt::backend::cuda::CudaBackend;
use glip_rt::kernels;
use glip_rt::testing::{cuda_or_skip, group_norm_levels_packed_on, max_abs_diff, nse, Rng};
use half::f16;

const SIZES: [(usize, usize); 5] = [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)];

fn parity(be: &CudaBackend, batch: usize, act: GnActivation, seed: u64) {
    let s = GroupNormShape {
        activation: act,
        ..GroupNormShape::glip(batch, 256)
    };
    let mut levels = Vec::new();
    let mut off = 0;
    for (h, w) in SIZES {
        levels.push(GnLevel {
            offset: off,
            hw: h * w,
        });
        off += batch * 256 * h * w;
    }
    let mut rng = Rng::new(seed);
    // Non-zero means and per-level scales, as after a conv.
    let xh: Vec<f16> = (0..off)
        .map(|_| f16::from_f32(1.5 + 2.0 * rng.normal()))
        .collect();
    let xf: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    let (gw, gb) = (rng.normal_vec(256, 1.0), rng.normal_vec(256, 0.5));
    let mut want = vec![0.0f32; off];
    group_norm_levels(&s, &levels, &xf, &gw, &gb, &mut want).unwrap();

    let got: Vec<f32> = group_norm_levels_packed_on(be, &s, &levels, &xh, &gw, &gb)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    for (l, lv) in levels.iter().enumerate() {
        let r = lv.offset..lv.offset + batch * 256 * lv.hw;
        let (g, w) = (&got[r.clone()], &want[r]);
        assert!(
            g.iter().all(|v| v.is_finite()),
            "level {l}: non-finite output"
        );
        let (e, d) = (nse(g, w), max_abs_diff(g, w));
        let peak = w.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        println!("batch {batch} {act:?} level {l} {:?}: nse {e:.3e}, max |diff| {d:.3e} (max |want| {peak:.2})", SIZES[l]);
        assert!(e <= 1e-4, "level {l}: nse {e}");
        assert!(d <= 4e-3 * peak.max(1.0), "level {l}: max |diff| {d}");
    }
}

#[test]
fn kernel_symbols_exist() {
    assert!(kernels::has_kernel(
        kernels::names::GLIP_GROUP_NORM_STATS_F16
    ));
    assert!(kernels::has_kernel(
        kernels::names::GLIP_GROUP_NORM_APPLY_F16
    ));
}

#[test]
fn parity_group_norm_five_levels_batch1() {
    let Some(be) = cuda_or_skip("parity_group_norm_five_levels_batch1") else {
        return;
    };
    parity(&be, 1, GnActivation::None, 1);
}

#[test]
fn parity_group_norm_five_levels_batch2() {
    let Some(be) = cuda_or_skip("parity_group_norm_five_levels_batch2") else {
        return;
    };
    parity(&be, 2, GnActivation::None, 2);
}

#[test]
fn parity_group_norm_relu_batch2() {
    let Some(be) = cuda_or_skip("parity_group_norm_relu_batch2") else {
        return;
    };
    parity(&be, 2, GnActivation::Relu, 3);
}
