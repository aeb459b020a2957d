//! group_norm: GroupNorm over every pyramid level in one grouped launch against the CPU twin:
//! GLIP-T's five levels at 800×1344 (100×168 … 7×11) on a GPU, those of a 200×336 image on
//! the emulated device; 256 channels, 16 groups, batch 1 and 2, with and without the ReLU.

use super::{halves, kernel_row, to_f32, twin, Compared, KernelRow, Scale, Tol};
use crate::backend::cpu::group_norm::{group_norm_levels, GnActivation, GnLevel, GroupNormShape};
use crate::testing::{group_norm_levels_packed_on, Rng};

pub(super) fn rows(scale: Scale, t: &mut Vec<KernelRow>) {
    let sizes: &'static [(usize, usize)] = match scale {
        Scale::GlipT => &[(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)],
        Scale::Reduced => &[(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)],
    };
    let cases = [
        (1, GnActivation::None),
        (2, GnActivation::None),
        (2, GnActivation::Relu),
    ];
    for (ci, (batch, activation)) in cases.into_iter().enumerate() {
        t.push(kernel_row(
            "group_norm_levels_f16",
            "group_norm",
            format!("batch {batch}, 256 channels, {activation:?}, levels {sizes:?}"),
            move |be| {
                let s = GroupNormShape {
                    activation,
                    ..GroupNormShape::glip(batch, 256)
                };
                let mut levels = Vec::new();
                let mut len = 0;
                for (h, w) in sizes {
                    levels.push(GnLevel {
                        offset: len,
                        hw: h * w,
                    });
                    len += batch * 256 * h * w;
                }
                let mut rng = Rng::new(1 + ci as u64);
                // Non-zero means and a wide spread, as after a conv.
                let (x, xf) = halves(
                    rng.normal_vec(len, 2.0)
                        .into_iter()
                        .map(|v| v + 1.5)
                        .collect(),
                );
                let (gw, gb) = (rng.normal_vec(256, 1.0), rng.normal_vec(256, 0.5));
                let got = group_norm_levels_packed_on(be, &s, &levels, &x, &gw, &gb)?;
                let mut want = vec![0.0f32; len];
                twin(group_norm_levels(&s, &levels, &xf, &gw, &gb, &mut want))?;
                // Each level on its own: a small level's error is not averaged away.
                Ok(levels
                    .iter()
                    .enumerate()
                    .map(|(l, lv)| {
                        let r = lv.offset..lv.offset + batch * 256 * lv.hw;
                        let w = want[r.clone()].to_vec();
                        let peak = w.iter().fold(0.0f32, |a, b| a.max(b.abs()));
                        Compared {
                            name: format!("level {l}"),
                            device: to_f32(&got[r]),
                            twin: w,
                            tol: Tol::new(1e-4, 4e-3 * peak.max(1.0)),
                        }
                    })
                    .collect())
            },
        ));
    }
}
