//! deform_conv: the modulated deformable 3×3 conv against the CPU twin at GLIP-T's P3/P4
//! sizes (reduced, with ragged tiles, on the emulated device): stride 1, stride 2 from P3 to
//! P4's size, and DyConv's coarser-level branch (P4 input, offsets read from P3's buffer,
//! glip-t-inference-spec.md §8) with batch 2 so the per-image offset stride is exercised.

use super::{halves, kernel_row, to_f32, twin, Compared, KernelRow, Scale, Tol};
use crate::backend::cpu::deform_conv::{modulated_deform_conv3x3, DeformConvShape};
use crate::backend::cuda::deform_conv::deform_conv_fwd_f16;
use crate::testing::Rng;
use half::f16;

pub(super) fn rows(scale: Scale, t: &mut Vec<KernelRow>) {
    let full = scale == Scale::GlipT;
    let cases = [
        (
            "P3, stride 1",
            if full {
                DeformConvShape::new(1, 256, 256, 100, 168, 1)
            } else {
                // K = 40 × 9, 72 outputs: ragged tiles.
                DeformConvShape::new(1, 40, 72, 13, 21, 1)
            },
        ),
        (
            "P3 → P4, stride 2",
            if full {
                DeformConvShape::new(1, 256, 256, 100, 168, 2)
            } else {
                DeformConvShape::new(1, 40, 40, 14, 22, 2)
            },
        ),
        (
            "P4 input, P3's offsets (GLIP's quirk), batch 2",
            if full {
                DeformConvShape::new(2, 256, 256, 50, 84, 1).with_offset_source(100, 168)
            } else {
                DeformConvShape::new(2, 24, 24, 7, 11, 1).with_offset_source(14, 22)
            },
        ),
    ];
    for (ci, (what, s)) in cases.into_iter().enumerate() {
        t.push(kernel_row(
            "deform_conv_fwd_f16",
            "deform_conv",
            format!(
                "{what}: {}→{} channels, {}x{}",
                s.in_channels, s.out_channels, s.in_h, s.in_w
            ),
            move |be| {
                let mut rng = Rng::new(1 + ci as u64);
                let (lx, lo, lm, lw, ly) = s.required_lens();
                let (x, xf) = halves(rng.normal_vec(lx, 1.0));
                // Offsets of a few pixels: many samples cross borders and the -1 < p < size
                // edge.
                let (off, of) = halves(rng.normal_vec(lo, 2.5));
                let (m, mf) = halves(rng.uniform_vec(lm, 0.0, 1.0));
                let (w, wf) = halves(rng.normal_vec(lw, 1.0 / ((s.in_channels * 9) as f32).sqrt()));
                let bias = rng.normal_vec(s.out_channels, 0.5);
                let mut y = be.filled_f16(ly, f16::NAN)?;
                deform_conv_fwd_f16(
                    be,
                    &s,
                    &be.upload_f16(&x)?,
                    &be.upload_f16(&off)?,
                    &be.upload_f16(&m)?,
                    &be.upload_f16(&w)?,
                    &be.upload_f32(&bias)?,
                    &mut y,
                )?;
                let want = twin(modulated_deform_conv3x3(
                    &s,
                    &xf,
                    &of,
                    &mf,
                    &wf,
                    Some(&bias),
                ))?;
                let peak = want.iter().fold(0.0f32, |a, b| a.max(b.abs()));
                Ok(vec![Compared {
                    name: "y".into(),
                    device: to_f32(&be.download(&y)?),
                    twin: want,
                    tol: Tol::new(1e-4, 1e-2 * peak.max(1.0)),
                }])
            },
        ));
    }
}
