//! logits: the text projection, the dot-product logits with the fused epilogue written level
//! by level into one packed buffer (`out_row0`) in both visual layouts at T = 256 and 8, the
//! ±50000 clamp binding, and the phrase MEAN of token sigmoids, against the CPU twins. GLIP-T's
//! five levels on a GPU; on the emulated device the levels of a 96×160 image (none a multiple
//! of the kernels' tiles).

use super::{halves, kernel_row, twin, Compared, KernelRow, Scale, Tol};
use crate::backend::cpu::logits::{self as cpu, PositiveMapCsr, VisualLayout};
use crate::backend::cuda::logits::{self as gpu, DevicePositiveMap, DotShape};
use crate::testing::Rng;

const DIM: usize = 256;
const LANG: usize = 768;

fn levels(scale: Scale) -> &'static [usize] {
    match scale {
        Scale::GlipT => &[16_800, 4_200, 1_050, 273, 77],
        // 12×20 + 6×10 + 3×5 + 2×3 + 1×2.
        Scale::Reduced => &[240, 60, 15, 6, 2],
    }
}

/// A COCO-like positive map: 80 labels of 1–3 tokens separated by unowned tokens.
fn coco_like_map() -> Vec<(u32, Vec<usize>)> {
    let mut map = Vec::new();
    let mut t = 1;
    for label in 1..=80u32 {
        let k = 1 + (label as usize * 7) % 3;
        map.push((label, (t..t + k).collect()));
        t += k + 1;
    }
    map
}

pub(super) fn rows(scale: Scale, t: &mut Vec<KernelRow>) {
    t.push(kernel_row(
        "text_proj_f16",
        "logits",
        "T 256, 768 → 256, token bias with log-scale −4.6",
        |be| {
            let mut rng = Rng::new(11);
            let n_txt = 256;
            let (hidden, hf) = halves(rng.normal_vec(n_txt * LANG, 1.0));
            let (w, wf) = halves(rng.normal_vec(DIM * LANG, 0.03));
            let bias = rng.normal_vec(DIM, 0.1);
            let bias_lang = rng.normal_vec(LANG, 0.05);
            let mut proj = be.filled_f32(n_txt * DIM, f32::NAN)?;
            let mut tb = be.filled_f32(n_txt, f32::NAN)?;
            gpu::text_proj_f16(
                be,
                n_txt,
                LANG,
                DIM,
                &be.upload_f16(&hidden)?,
                &be.upload_f16(&w)?,
                &be.upload_f32(&bias)?,
                &be.upload_f32(&bias_lang)?,
                -4.6,
                &mut proj,
                &mut tb,
            )?;
            let (wp, wb) = twin(cpu::text_projection(
                &hf, n_txt, &wf, &bias, &bias_lang, -4.6,
            ))?;
            let tol = Tol::new(1e-8, 1e-4);
            Ok(vec![
                Compared {
                    name: "proj".into(),
                    device: be.download(&proj)?,
                    twin: wp,
                    tol,
                },
                Compared {
                    name: "tok_bias".into(),
                    device: be.download(&tb)?,
                    twin: wb,
                    tol,
                },
            ])
        },
    ));

    let all = levels(scale);
    for (ci, (n_txt, layout, per_level)) in [
        (256, VisualLayout::ChannelMajor, true),
        (256, VisualLayout::PositionMajor, false),
        (8, VisualLayout::ChannelMajor, false),
        (8, VisualLayout::PositionMajor, true),
    ]
    .into_iter()
    .enumerate()
    {
        let parts: Vec<usize> = if per_level {
            all.to_vec()
        } else {
            vec![all.iter().sum()]
        };
        t.push(kernel_row(
            "logits::dot",
            "logits",
            format!("T {n_txt}, {layout:?}, launches of {parts:?} rows into one packed buffer"),
            move |be| {
                let n_pos: usize = parts.iter().sum();
                let mut rng = Rng::new(21 + ci as u64);
                let scale = 0.8f32; // exp(log_scale) ≠ 1 exercises the division
                let proj = rng.normal_vec(n_txt * DIM, 0.06);
                let tok_bias = rng.normal_vec(n_txt, 1.0);
                let (dp, db) = (be.upload_f32(&proj)?, be.upload_f32(&tok_bias)?);
                let mut out = be.filled_f32(n_pos * n_txt, f32::NAN)?;
                let mut want = Vec::with_capacity(n_pos * n_txt);
                let mut row0 = 0;
                for &hw in &parts {
                    // [dim, hw] (NCHW) or [hw, dim]: the kernel and the twin read the same.
                    let (v, vf) = halves(rng.normal_vec(hw * DIM, 1.0));
                    let s = DotShape {
                        batch: 1,
                        n_pos: hw,
                        n_txt,
                        dim: DIM,
                        channel_major: layout == VisualLayout::ChannelMajor,
                        out_rows: n_pos,
                        out_row0: row0,
                    };
                    gpu::dot(
                        be,
                        &s,
                        &be.upload_f16(&v)?,
                        &dp,
                        &db,
                        scale,
                        cpu::LOGIT_CLAMP,
                        &mut out,
                    )?;
                    want.extend(twin(cpu::dot_logits(
                        &vf,
                        layout,
                        &proj,
                        &tok_bias,
                        1,
                        hw,
                        n_txt,
                        DIM,
                        scale,
                        cpu::LOGIT_CLAMP,
                    ))?);
                    row0 += hw;
                }
                Ok(vec![Compared {
                    name: "logits".into(),
                    device: be.download(&out)?,
                    twin: want,
                    tol: Tol::new(1e-4, 1e-3),
                }])
            },
        ));
    }

    t.push(kernel_row(
        "logits::dot",
        "logits",
        "T 8, 77 positions of |x| ~ 1000: the ±50000 clamp binds",
        |be| {
            let mut rng = Rng::new(25);
            let (n, n_txt) = (77, 8);
            let proj = rng.normal_vec(n_txt * DIM, 1.0);
            let tok_bias = rng.normal_vec(n_txt, 1.0);
            let (vis, visf) = halves(rng.normal_vec(n * DIM, 1000.0));
            let want = twin(cpu::dot_logits(
                &visf,
                VisualLayout::PositionMajor,
                &proj,
                &tok_bias,
                1,
                n,
                n_txt,
                DIM,
                1.0,
                cpu::LOGIT_CLAMP,
            ))?;
            let mut out = be.filled_f32(n * n_txt, f32::NAN)?;
            let s = DotShape {
                batch: 1,
                n_pos: n,
                n_txt,
                dim: DIM,
                channel_major: false,
                out_rows: n,
                out_row0: 0,
            };
            gpu::dot(
                be,
                &s,
                &be.upload_f16(&vis)?,
                &be.upload_f32(&proj)?,
                &be.upload_f32(&tok_bias)?,
                1.0,
                cpu::LOGIT_CLAMP,
                &mut out,
            )?;
            let got = be.download(&out)?;
            // The clamped entries must be the clamp exactly.
            let clamped: Vec<usize> = (0..want.len())
                .filter(|&i| want[i].abs() == cpu::LOGIT_CLAMP)
                .collect();
            if clamped.is_empty() {
                return Err(crate::error::Error::Invalid(
                    "the draw never reaches the clamp".into(),
                ));
            }
            Ok(vec![
                Compared {
                    name: "clamped logits".into(),
                    device: clamped.iter().map(|&i| got[i]).collect(),
                    twin: clamped.iter().map(|&i| want[i]).collect(),
                    tol: Tol::EXACT,
                },
                Compared {
                    name: "logits".into(),
                    device: got,
                    twin: want,
                    tol: Tol::new(1e-4, 1.0),
                },
            ])
        },
    ));

    let n_pos: usize = all.iter().sum();
    t.push(kernel_row(
        "phrase_mean_f32",
        "logits",
        format!("{n_pos} positions, T 256, 80 labels of 1–3 tokens"),
        move |be| {
            let mut rng = Rng::new(31);
            let (n_txt, labels) = (256, 80);
            let logits = rng.normal_vec(n_pos * n_txt, 3.0);
            let map = PositiveMapCsr::new(&coco_like_map(), labels, n_txt)?;
            let dmap = DevicePositiveMap::upload(be, &map, labels, n_txt)?;
            let mut out = be.filled_f32(n_pos * labels, f32::NAN)?;
            gpu::phrase_mean_f32(be, n_pos, &be.upload_f32(&logits)?, &dmap, &mut out)?;
            Ok(vec![Compared {
                name: "scores".into(),
                device: be.download(&out)?,
                twin: twin(cpu::phrase_mean(&logits, n_pos, n_txt, &map, labels))?,
                tol: Tol::new(1e-10, 1e-6),
            }])
        },
    ));
}
