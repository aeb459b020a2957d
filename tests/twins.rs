//! The CPU twins on their own: the casts round to nearest even, axpby is f32 arithmetic
//! rounded once, the CPU backend's matmul and cast, the bi_attn twin against GLIP's formulas
//! written out literally, and the bi_attn kernels' algorithm (16-key tiles, online softmax,
//! image-axis chunks merged) transcribed on the CPU against the twin. The twins against the
//! kernels are the op table's kernel rows (tests/op_table.rs).

use glip_rt::backend::cpu::bi_attn::{bi_attn, BiAttnShape, CLAMP, TEXT_PAD_FILL};
use glip_rt::backend::cpu::elementwise as cpu;
use glip_rt::backend::{cpu::CpuBackend, Backend};
use glip_rt::testing::{max_abs_diff, Rng};
use glip_rt::{DType, Tensor};
use half::f16;

#[test]
fn cpu_cast_rounds_to_nearest_even() {
    // 1 + 2^-11 is halfway between two f16 values: ties go to the even mantissa (1.0).
    let halfway = 1.0 + f32::powi(2.0, -11);
    let y = cpu::cast_f32_f16(&[halfway, 65520.0, -3.25]);
    assert_eq!(y[0], f16::from_f32(1.0));
    assert!(y[1].is_infinite(), "65520 overflows f16");
    assert_eq!(y[2].to_f32(), -3.25);
}

#[test]
fn cpu_axpby_is_f32_arithmetic_rounded_once() {
    let mut rng = Rng::new(1);
    let a: Vec<f16> = rng
        .normal_vec(1000, 2.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let b: Vec<f16> = rng
        .normal_vec(1000, 2.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let y = cpu::axpby_f16(0.5, &a, 2.0, &b).unwrap();
    for i in 0..1000 {
        let want = f16::from_f32(0.5 * a[i].to_f32() + 2.0 * b[i].to_f32());
        assert_eq!(y[i], want, "element {i}");
    }
    assert!(
        cpu::axpby_f16(1.0, &a, 1.0, &b[..999]).is_err(),
        "length mismatch must be an error"
    );
}

#[test]
fn cpu_backend_matmul_matches_direct_sum() {
    let mut rng = Rng::new(2);
    let (m, k, n) = (7, 13, 5);
    let a = rng.normal_vec(m * k, 1.0);
    let b = rng.normal_vec(n * k, 1.0); // [n, k]: used transposed
    let be = CpuBackend;
    let c = be
        .matmul(
            &Tensor::from_f32(&[m, k], a.clone()).unwrap(),
            &Tensor::from_f32(&[n, k], b.clone()).unwrap(),
            true,
        )
        .unwrap();
    let c = c.f32s().unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
            assert!(
                (c[i * n + j] - want).abs() < 1e-5,
                "({i},{j}) {} vs {want}",
                c[i * n + j]
            );
        }
    }
    let bad = be.matmul(
        &Tensor::from_f32(&[m, k], a).unwrap(),
        &Tensor::from_f32(&[n, k + 1], vec![0.5; n * (k + 1)]).unwrap(),
        true,
    );
    assert!(bad.is_err(), "inner-dimension mismatch must be an error");
}

#[test]
fn cpu_backend_cast_round_trip() {
    let mut rng = Rng::new(3);
    let v = rng.normal_vec(64, 4.0);
    let be = CpuBackend;
    let t = Tensor::from_f32(&[8, 8], v.clone()).unwrap();
    let h = be.cast(&t, DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    let back = be.cast(&h, DType::F32).unwrap();
    for (x, y) in v.iter().zip(back.f32s().unwrap()) {
        assert_eq!(f16::from_f32(*x).to_f32(), *y);
    }
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
