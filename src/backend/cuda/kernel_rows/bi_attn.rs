//! bi_attn: the bi-directional image-text attention kernels against the CPU twin, with the
//! default image-axis split and 7 splits (ragged chunks merged with exp(m_s − M)), padded
//! tokens per image, batch 2. GLIP-T's 8 heads and 22 400 positions on a GPU; on the emulated
//! device 2 heads and the 329 positions of a 96×160 image (not a multiple of the 16-row tiles).

use super::{halves, kernel_row, to_f32, twin, Compared, KernelRow, Scale, Tol};
use crate::backend::cpu::bi_attn::{bi_attn, BiAttnShape};
use crate::backend::cuda::bi_attn::{bi_attn_f16, default_img_splits, BiAttnWorkspace};
use crate::testing::Rng;
use half::f16;

/// (batch, T, real tokens per image).
type Case = (usize, usize, Vec<usize>);

pub(super) fn rows(scale: Scale, t: &mut Vec<KernelRow>) {
    let (heads, n_img, cases): (usize, usize, Vec<Case>) = match scale {
        Scale::Reduced => (2, 329, vec![(2, 40, vec![33, 40]), (1, 8, vec![8])]),
        Scale::GlipT => (
            8,
            22_400,
            vec![
                (1, 256, vec![200]),
                (2, 256, vec![200, 37]),
                (1, 8, vec![8]),
                (2, 8, vec![5, 8]),
            ],
        ),
    };
    for (ci, (batch, n_txt, real)) in cases.into_iter().enumerate() {
        let splits = [default_img_splits(n_img), 7];
        t.push(kernel_row(
            "bi_attn_f16",
            "bi_attn",
            format!(
                "batch {batch}, {heads} heads, {n_img} positions, T {n_txt} (real {real:?}), {splits:?} image splits"
            ),
            move |be| {
                let s = BiAttnShape {
                    batch,
                    heads,
                    head_dim: 256,
                    n_img,
                    n_txt,
                };
                let mut rng = Rng::new(100 + ci as u64);
                // q carries GLIP's 1/16 scale; the logits then have a std of about 2.
                let (q, qf) = halves(rng.normal_vec(s.img_len(), 0.125));
                let (k, kf) = halves(rng.normal_vec(s.txt_len(), 1.0));
                let (vl, vlf) = halves(rng.normal_vec(s.txt_len(), 1.0));
                let (vv, vvf) = halves(rng.normal_vec(s.img_len(), 1.0));
                let mask: Vec<i32> = (0..batch)
                    .flat_map(|b| (0..n_txt).map(move |j| (b, j)))
                    .map(|(b, j)| i32::from(j < real[b]))
                    .collect();
                let (dq, dk) = (be.upload_f16(&q)?, be.upload_f16(&k)?);
                let (dvl, dvv) = (be.upload_f16(&vl)?, be.upload_f16(&vv)?);
                let dm = be.upload_i32(&mask)?;
                let (wv, wt) = twin(bi_attn(&s, &qf, &kf, &vlf, &vvf, &mask))?;
                let tol = Tol::new(1e-4, 2e-2);
                let mut out = Vec::new();
                for n_splits in splits {
                    let mut ws = BiAttnWorkspace::new(be, &s, n_splits)?;
                    let mut ov = be.filled_f16(s.img_len(), f16::NAN)?;
                    let mut ot = be.filled_f16(s.txt_len(), f16::NAN)?;
                    bi_attn_f16(
                        be, &s, &dq, &dk, &dvl, &dvv, &dm, &mut ws, &mut ov, &mut ot,
                    )?;
                    out.push(Compared {
                        name: format!("o_v, {n_splits} splits"),
                        device: to_f32(&be.download(&ov)?),
                        twin: wv.clone(),
                        tol,
                    });
                    out.push(Compared {
                        name: format!("o_t, {n_splits} splits"),
                        device: to_f32(&be.download(&ot)?),
                        twin: wt.clone(),
                        tol,
                    });
                }
                Ok(out)
            },
        ));
    }
}
