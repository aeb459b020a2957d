//! bi_attn: CUDA kernels vs the CPU twin (GLIP-T sizes on a GPU, reduced sizes on the
//! emulated device), and the CPU twin vs a direct transcription of GLIP's formulas.

use glip_rt::backend::cpu::bi_attn::{bi_attn, BiAttnShape, CLAMP, TEXT_PAD_FILL};
use glip_rt::testing::{max_abs_diff, nse, Rng};
use half::f16;

/// GLIP-T's five levels at 800x1344: 100x168 + 50x84 + 25x42 + 13x21 + 7x11.
const N_IMG: usize = 22_400;
/// On the emulated device: five levels at 96x160 (12x20 + 6x10 + 3x5 + 2x3 + 1x2), not a
/// multiple of the 16-row tiles, so ragged last tiles and splits are exercised.
const N_IMG_REDUCED: usize = 329;

struct Inputs {
    s: BiAttnShape,
    q: Vec<f16>,
    k: Vec<f16>,
    vl: Vec<f16>,
    vv: Vec<f16>,
    mask: Vec<i32>,
}

fn inputs(batch: usize, heads: usize, n_img: usize, t: usize, real: &[usize], seed: u64) -> Inputs {
    let s = BiAttnShape {
        batch,
        heads,
        head_dim: 256,
        n_img,
        n_txt: t,
    };
    let mut rng = Rng::new(seed);
    let h = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
    // q carries GLIP's 1/16 scale; logits then have a std of about 2.
    let q = h(rng.normal_vec(s.img_len(), 0.125));
    let k = h(rng.normal_vec(s.txt_len(), 1.0));
    let vl = h(rng.normal_vec(s.txt_len(), 1.0));
    let vv = h(rng.normal_vec(s.img_len(), 1.0));
    let mask = (0..batch)
        .flat_map(|b| (0..t).map(move |j| i32::from(j < real[b])))
        .collect();
    Inputs {
        s,
        q,
        k,
        vl,
        vv,
        mask,
    }
}

fn f32s(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn cpu(i: &Inputs) -> (Vec<f32>, Vec<f32>) {
    bi_attn(
        &i.s,
        &f32s(&i.q),
        &f32s(&i.k),
        &f32s(&i.vl),
        &f32s(&i.vv),
        &i.mask,
    )
    .unwrap()
}

/// GLIP's BiMultiHeadAttention written out literally, one (b, h) at a time, in f64.
fn naive(
    s: &BiAttnShape,
    q: &[f32],
    k: &[f32],
    vl: &[f32],
    vv: &[f32],
    mask: &[i32],
) -> (Vec<f32>, Vec<f32>) {
    let (n, t, d, c) = (s.n_img, s.n_txt, s.head_dim, s.channels());
    let mut ov = vec![0.0f32; s.img_len()];
    let mut ot = vec![0.0f32; s.txt_len()];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let a: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    (0..t)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|x| {
                                    q[(b * n + i) * c + h * d + x] as f64
                                        * k[(b * t + j) * c + h * d + x] as f64
                                })
                                .sum();
                            dot.clamp(-CLAMP as f64, CLAMP as f64)
                        })
                        .collect()
                })
                .collect();
            for j in 0..t {
                let m = (0..n).map(|i| a[i][j]).fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = (0..n)
                    .map(|i| (a[i][j] - m).clamp(-CLAMP as f64, CLAMP as f64).exp())
                    .collect();
                let z: f64 = e.iter().sum();
                for x in 0..d {
                    let v: f64 = (0..n)
                        .map(|i| e[i] / z * vv[(b * n + i) * c + h * d + x] as f64)
                        .sum();
                    ot[(b * t + j) * c + h * d + x] = v as f32;
                }
            }
            for i in 0..n {
                let row: Vec<f64> = (0..t)
                    .map(|j| {
                        a[i][j]
                            + if mask[b * t + j] != 0 {
                                1.0
                            } else {
                                TEXT_PAD_FILL as f64
                            }
                    })
                    .collect();
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = row.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for x in 0..d {
                    let v: f64 = (0..t)
                        .map(|j| e[j] / z * vl[(b * t + j) * c + h * d + x] as f64)
                        .sum();
                    ov[(b * n + i) * c + h * d + x] = v as f32;
                }
            }
        }
    }
    (ov, ot)
}

#[test]
fn cpu_twin_matches_glip_formulas() {
    let s = BiAttnShape {
        batch: 2,
        heads: 2,
        head_dim: 16,
        n_img: 37,
        n_txt: 9,
    };
    let mut rng = Rng::new(3);
    let q = rng.normal_vec(s.img_len(), 1.0);
    let k = rng.normal_vec(s.txt_len(), 1.0);
    let vl = rng.normal_vec(s.txt_len(), 1.0);
    let vv = rng.normal_vec(s.img_len(), 1.0);
    let mask: Vec<i32> = (0..18)
        .map(|j| i32::from(j % 9 < if j < 9 { 6 } else { 9 }))
        .collect();
    let (ov, ot) = bi_attn(&s, &q, &k, &vl, &vv, &mask).unwrap();
    let (wv, wt) = naive(&s, &q, &k, &vl, &vv, &mask);
    let (e1, e2) = (max_abs_diff(&ov, &wv), max_abs_diff(&ot, &wt));
    println!("o_v max |diff| {e1:.2e}, o_t max |diff| {e2:.2e}");
    assert!(e1 < 1e-5 && e2 < 1e-5);
    // Padded tokens never reach the image side: changing their keys/values changes nothing.
    let mut k2 = k.clone();
    let mut vl2 = vl.clone();
    for j in 6..9 {
        for x in 0..s.channels() {
            k2[j * s.channels() + x] += 5.0;
            vl2[j * s.channels() + x] -= 3.0;
        }
    }
    let (ov2, _) = bi_attn(&s, &q, &k2, &vl2, &vv, &mask).unwrap();
    assert_eq!(
        max_abs_diff(
            &ov[..s.n_img * s.channels()],
            &ov2[..s.n_img * s.channels()]
        ),
        0.0
    );
}

/// (batch, T, real tokens per image).
type Case = (usize, usize, &'static [usize]);

#[test]
fn cuda_bi_attn_matches_cpu() {
    let Some(be) = glip_rt::testing::cuda_or_skip("cuda_bi_attn_matches_cpu") else {
        return;
    };
    use glip_rt::backend::cuda::bi_attn::{bi_attn_f16, default_img_splits, BiAttnWorkspace};
    // (batch, T, real tokens per image); GLIP-T's 8 heads and 22 400 positions on a GPU.
    let (heads, n_img, cases): (usize, usize, Vec<Case>) = if glip_rt::testing::reduced(&be) {
        (2, N_IMG_REDUCED, vec![(2, 40, &[33, 40]), (1, 8, &[8])])
    } else {
        (
            8,
            N_IMG,
            vec![
                (1, 256, &[200]),
                (2, 256, &[200, 37]),
                (1, 8, &[8]),
                (2, 8, &[5, 8]),
            ],
        )
    };
    for (ci, (batch, t, real)) in cases.into_iter().enumerate() {
        let i = inputs(batch, heads, n_img, t, real, 100 + ci as u64);
        let (want_v, want_t) = cpu(&i);
        let dq = be.upload_f16(&i.q).unwrap();
        let dk = be.upload_f16(&i.k).unwrap();
        let dvl = be.upload_f16(&i.vl).unwrap();
        let dvv = be.upload_f16(&i.vv).unwrap();
        let dm = be.upload_i32(&i.mask).unwrap();
        for splits in [default_img_splits(n_img), 7] {
            let mut ws = BiAttnWorkspace::new(&be, &i.s, splits).unwrap();
            let mut ov = be.filled_f16(i.s.img_len(), f16::NAN).unwrap();
            let mut ot = be.filled_f16(i.s.txt_len(), f16::NAN).unwrap();
            bi_attn_f16(
                &be, &i.s, &dq, &dk, &dvl, &dvv, &dm, &mut ws, &mut ov, &mut ot,
            )
            .unwrap();
            let got_v = f32s(&be.download(&ov).unwrap());
            let got_t = f32s(&be.download(&ot).unwrap());
            for (what, got, want) in [("o_v", &got_v, &want_v), ("o_t", &got_t, &want_t)] {
                assert!(
                    got.iter().all(|x| x.is_finite()),
                    "{what}: non-finite output (batch {batch}, T {t})"
                );
                let e = nse(got, want);
                let d = max_abs_diff(got, want);
                println!("batch {batch} T {t} real {real:?} splits {splits}: {what} nse {e:.2e} max |diff| {d:.2e}");
                assert!(e <= 1e-4, "{what}: nse {e}");
                assert!(d <= 2e-2, "{what}: max |diff| {d}");
            }
        }
    }
}

/// One query row over `keys` in 16-key tiles, as a kernel block does: online softmax with
/// -inf for key slots past the end. Returns (max, sum, unnormalised weighted values).
fn attend_tiles(
    row: &[f32],
    keys: &[&[f32]],
    vals: &[&[f32]],
    bias: &[f32],
) -> (f32, f32, Vec<f32>) {
    const TILE: usize = 16;
    let (len, d) = (keys.len(), row.len());
    let (mut m, mut l, mut acc) = (f32::NEG_INFINITY, 0.0f32, vec![0.0f32; d]);
    for k0 in (0..len).step_by(TILE) {
        let xs: Vec<f32> = (k0..k0 + TILE)
            .map(|kk| {
                if kk < len {
                    row.iter()
                        .zip(keys[kk])
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        .clamp(-CLAMP, CLAMP)
                        + bias[kk]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let m_new = xs.iter().cloned().fold(m, f32::max);
        let sc = (m - m_new).exp();
        let es: Vec<f32> = xs.iter().map(|x| (x - m_new).exp()).collect();
        l = l * sc + es.iter().sum::<f32>();
        for (x, a) in acc.iter_mut().enumerate() {
            *a = *a * sc
                + (k0..(k0 + TILE).min(len))
                    .map(|kk| es[kk - k0] * vals[kk][x])
                    .sum::<f32>();
        }
        m = m_new;
    }
    (m, l, acc)
}

/// The CUDA kernels' algorithm transcribed on the CPU (16-key tiles, online softmax,
/// image-axis chunks merged with exp(m_s - M)), so the tiling and merge logic is checked
/// even without a GPU, including empty chunks and leading all-padding tiles.
fn kernel_model(
    s: &BiAttnShape,
    q: &[f32],
    k: &[f32],
    vl: &[f32],
    vv: &[f32],
    mask: &[i32],
    splits: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (n, t, d, c) = (s.n_img, s.n_txt, s.head_dim, s.channels());
    let mut ov = vec![0.0f32; s.img_len()];
    let mut ot = vec![0.0f32; s.txt_len()];
    let chunk = n.div_ceil(splits);
    for b in 0..s.batch {
        for h in 0..s.heads {
            let at = |_src: &[f32], seq: usize, i: usize| (seq + i) * c + h * d;
            let rows = |src: &[f32], seq: usize, r: std::ops::Range<usize>| -> Vec<Vec<f32>> {
                r.map(|i| src[at(src, seq, i)..at(src, seq, i) + d].to_vec())
                    .collect()
            };
            let (qs, vvs) = (rows(q, b * n, 0..n), rows(vv, b * n, 0..n));
            let (ks, vls) = (rows(k, b * t, 0..t), rows(vl, b * t, 0..t));
            let bias: Vec<f32> = (0..t)
                .map(|j| {
                    if mask[b * t + j] != 0 {
                        1.0
                    } else {
                        TEXT_PAD_FILL
                    }
                })
                .collect();
            let kr: Vec<&[f32]> = ks.iter().map(|v| v.as_slice()).collect();
            let vr: Vec<&[f32]> = vls.iter().map(|v| v.as_slice()).collect();
            for i in 0..n {
                let (_, l, acc) = attend_tiles(&qs[i], &kr, &vr, &bias);
                for x in 0..d {
                    ov[at(q, b * n, i) + x] = acc[x] / l;
                }
            }
            for j in 0..t {
                let parts: Vec<(f32, f32, Vec<f32>)> = (0..splits)
                    .map(|sp| {
                        let i0 = (sp * chunk).min(n);
                        let i1 = (i0 + chunk).min(n);
                        let kk: Vec<&[f32]> = qs[i0..i1].iter().map(|v| v.as_slice()).collect();
                        let vvv: Vec<&[f32]> = vvs[i0..i1].iter().map(|v| v.as_slice()).collect();
                        attend_tiles(&ks[j], &kk, &vvv, &vec![0.0; i1 - i0])
                    })
                    .collect();
                let big_m = parts.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
                let l: f32 = parts.iter().map(|p| p.1 * (p.0 - big_m).exp()).sum();
                for x in 0..d {
                    let a: f32 = parts.iter().map(|p| p.2[x] * (p.0 - big_m).exp()).sum();
                    ot[at(k, b * t, j) + x] = a / l;
                }
            }
        }
    }
    (ov, ot)
}

#[test]
fn kernel_algorithm_matches_twin() {
    let s = BiAttnShape {
        batch: 2,
        heads: 2,
        head_dim: 16,
        n_img: 37,
        n_txt: 21,
    };
    let mut rng = Rng::new(5);
    let q = rng.normal_vec(s.img_len(), 0.5);
    let k = rng.normal_vec(s.txt_len(), 1.0);
    let vl = rng.normal_vec(s.txt_len(), 1.0);
    let vv = rng.normal_vec(s.img_len(), 1.0);
    // Padding first in batch 0 (a whole leading tile of pads), at the end in batch 1.
    let mask: Vec<i32> = (0..2 * 21)
        .map(|j| i32::from(if j < 21 { j >= 17 } else { j - 21 < 5 }))
        .collect();
    let (wv, wt) = bi_attn(&s, &q, &k, &vl, &vv, &mask).unwrap();
    for splits in [1, 3, 7, 20, 37] {
        // 20 splits of 2 positions leave the last chunk empty.
        let (gv, gt) = kernel_model(&s, &q, &k, &vl, &vv, &mask, splits);
        let (e1, e2) = (max_abs_diff(&gv, &wv), max_abs_diff(&gt, &wt));
        println!("splits {splits}: o_v max |diff| {e1:.2e}, o_t max |diff| {e2:.2e}");
        assert!(e1 < 1e-5 && e2 < 1e-5, "splits {splits}: {e1} {e2}");
    }
}

#[test]
fn bi_attn_kernels_are_built() {
    use glip_rt::kernels::{self, names};
    for n in [
        names::GLIP_BI_ATTN_IMG_F16,
        names::GLIP_BI_ATTN_TXT_PARTIAL_F16,
        names::GLIP_BI_ATTN_TXT_MERGE_F16,
    ] {
        assert!(kernels::has_kernel(n), "{n}");
    }
    if kernels::COMPILED {
        assert!(kernels::fatbin("bi_attn").is_some_and(|b| !b.is_empty()));
    }
}
