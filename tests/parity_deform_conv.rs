//! GPU parity of kernels/deform_conv.cu against the CPU twin at GLIP-T's P3/P4 sizes:
//! stride 1 at P3, stride 2 from P3 to P4's size, and the coarser-level branch (P4 input,
//! offsets read from P3's buffer) with batch 2 so the per-image offset stride is exercised.

use glip_rt::backend::cpu::deform_conv::{conv_out, modulated_deform_conv3x3, DeformConvShape};
use glip_rt::backend::cuda::deform_conv::deform_conv_fwd_f16;
use glip_rt::backend::cuda::CudaBackend;
use glip_rt::kernels;
use glip_rt::testing::{cuda_or_skip, max_abs_diff, nse, Rng};
use half::f16;

/// Values rounded to f16, as f16 and as the f32 the CPU twin sees.
fn f16_vec(v: Vec<f32>) -> (Vec<f16>, Vec<f32>) {
    let h: Vec<f16> = v.into_iter().map(f16::from_f32).collect();
    let f = h.iter().map(|x| x.to_f32()).collect();
    (h, f)
}

fn parity(be: &CudaBackend, name: &str, s: DeformConvShape, seed: u64) {
    let mut rng = Rng::new(seed);
    let (lx, lo, lm, lw, ly) = s.required_lens();
    let (xh, xf) = f16_vec(rng.normal_vec(lx, 1.0));
    // Offsets of a few pixels: many samples cross borders and the -1 < p < size edge.
    let (oh, of) = f16_vec(rng.normal_vec(lo, 2.5));
    let (mh, mf) = f16_vec(rng.uniform_vec(lm, 0.0, 1.0));
    let (wh, wf) = f16_vec(rng.normal_vec(lw, 1.0 / ((s.in_channels * 9) as f32).sqrt()));
    let bias = rng.normal_vec(s.out_channels, 0.5);
    let want = modulated_deform_conv3x3(&s, &xf, &of, &mf, &wf, Some(&bias)).unwrap();

    let (dx, doff, dm, dw) = (
        be.upload_f16(&xh).unwrap(),
        be.upload_f16(&oh).unwrap(),
        be.upload_f16(&mh).unwrap(),
        be.upload_f16(&wh).unwrap(),
    );
    let db = be.upload_f32(&bias).unwrap();
    let mut dy = be.filled_f16(ly, f16::NAN).unwrap();
    deform_conv_fwd_f16(be, &s, &dx, &doff, &dm, &dw, &db, &mut dy).unwrap();
    let got: Vec<f32> = be
        .download(&dy)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{name}: non-finite output (unwritten or overflow)"
    );
    let e = nse(&got, &want);
    let d = max_abs_diff(&got, &want);
    let peak = want.iter().fold(0.0f32, |a, b| a.max(b.abs()));
    println!("{name}: nse {e:.3e}, max |diff| {d:.3e} (max |want| {peak:.3})");
    assert!(e <= 1e-4, "{name}: nse {e}");
    assert!(d <= 1e-2 * peak.max(1.0), "{name}: max |diff| {d}");
}

#[test]
fn kernel_symbol_exists() {
    assert!(kernels::has_kernel(
        kernels::names::GLIP_DEFORM_CONV_FWD_F16
    ));
}

#[test]
fn parity_deform_conv_p3_stride1() {
    let Some(be) = cuda_or_skip("parity_deform_conv_p3_stride1") else {
        return;
    };
    // The emulated device runs a reduced shape with ragged tiles (K = 40*9, 72 outputs).
    let s = if glip_rt::testing::reduced(&be) {
        DeformConvShape::new(1, 40, 72, 13, 21, 1)
    } else {
        DeformConvShape::new(1, 256, 256, 100, 168, 1)
    };
    parity(&be, "P3 stride 1", s, 1);
}

#[test]
fn parity_deform_conv_p3_stride2() {
    let Some(be) = cuda_or_skip("parity_deform_conv_p3_stride2") else {
        return;
    };
    let (c, h, w) = if glip_rt::testing::reduced(&be) {
        (40, 14, 22)
    } else {
        (256, 100, 168)
    };
    let s = DeformConvShape::new(1, c, c, h, w, 2);
    assert_eq!((s.out_h(), s.out_w()), (h / 2, w / 2));
    parity(&be, "P3->P4 stride 2", s, 2);
}

#[test]
fn parity_deform_conv_next_level_quirk() {
    let Some(be) = cuda_or_skip("parity_deform_conv_next_level_quirk") else {
        return;
    };
    // DyConv[0] at level P3: input P4 (50x84), offsets/mask of P3 (100x168) read as [18, 50, 84].
    let (c, h, w) = if glip_rt::testing::reduced(&be) {
        (24, 7, 11)
    } else {
        (256, 50, 84)
    };
    let s = DeformConvShape::new(2, c, c, h, w, 1).with_offset_source(2 * h, 2 * w);
    assert_eq!(
        (conv_out(h, 1), s.offset_batch_stride),
        (h, 18 * 2 * h * 2 * w)
    );
    parity(&be, "P4 input, P3 offsets (quirk), batch 2", s, 3);
}
