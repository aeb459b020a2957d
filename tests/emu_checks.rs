//! Proof that the emulated device's checks can fail: planted-bug copies of real kernels
//! (build.rs `MUTANTS`) run through the real launch wrappers and must be caught by the named
//! check (or, for a bug that is deterministic and race-free, by the parity against the CPU
//! twin), while the unmodified kernels pass the same run.

use glip_rt::backend::cpu::bi_attn::{bi_attn, BiAttnShape};
use glip_rt::backend::cpu::group_norm::{GnActivation, GnLevel, GroupNormShape};
use glip_rt::backend::cpu::nms::{self as cpu_nms, AtssConfig, Candidate, Level, PackedInputs};
use glip_rt::backend::cuda::bi_attn::{bi_attn_f16, BiAttnWorkspace};
use glip_rt::backend::cuda::nms::{self as gpu_nms, NmsOutputs, NmsWorkspace};
use glip_rt::backend::cuda::{CudaBackend, EmuCheck, EmuChecks};
use glip_rt::error::Error;
use glip_rt::testing::{max_abs_diff, Rng};
use half::f16;

/// GroupNorm over two small levels, each in a buffer of its own; each level's last piece ends
/// exactly at its buffer's end.
fn group_norm_on(be: &CudaBackend) -> glip_rt::error::Result<()> {
    let s = GroupNormShape {
        activation: GnActivation::None,
        ..GroupNormShape::glip(1, 64)
    };
    let levels = [
        GnLevel {
            offset: 0,
            hw: 40 * 30,
        },
        GnLevel {
            offset: 64 * 1200,
            hw: 10 * 6,
        },
    ];
    let n = 64 * 1200 + 64 * 60;
    let mut rng = Rng::new(7);
    let x: Vec<f16> = (0..n).map(|_| f16::from_f32(1.0 + rng.normal())).collect();
    let (w, b) = (rng.normal_vec(64, 1.0), rng.normal_vec(64, 0.5));
    glip_rt::testing::group_norm_levels_packed_on(be, &s, &levels, &x, &w, &b).map(|_| ())
}

/// The emulated device with every check, running `mutant` (None: the real kernels).
fn device(mutant: Option<&str>) -> CudaBackend {
    let mut be = CudaBackend::emulated_with(EmuChecks::Full);
    be.emulator_mut()
        .expect("emulated")
        .set_mutant(mutant)
        .expect("mutant compiled in");
    be
}

/// Which check (if any) stopped `run` on the device running `mutant`.
fn caught_in<T>(
    mutant: Option<&str>,
    run: impl Fn(&CudaBackend) -> glip_rt::error::Result<T>,
) -> Option<(EmuCheck, String)> {
    match run(&device(mutant)) {
        Ok(_) => None,
        Err(Error::KernelCheck { check, detail, .. }) => Some((check, detail)),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn caught(mutant: Option<&str>) -> Option<(EmuCheck, String)> {
    caught_in(mutant, group_norm_on)
}

#[test]
fn real_group_norm_passes_every_check() {
    assert_eq!(caught(None), None);
}

#[test]
fn removed_syncthreads_is_caught_as_a_race() {
    let (check, detail) = caught(Some("no_sync")).expect("the race must be caught");
    println!("no_sync caught by the {check} check: {detail}");
    assert_eq!(check, EmuCheck::Race, "{detail}");
}

#[test]
fn off_by_one_is_caught_by_the_bounds_check() {
    let (check, detail) = caught(Some("off_by_one")).expect("the overrun must be caught");
    println!("off_by_one caught by the {check} check: {detail}");
    assert_eq!(check, EmuCheck::Bounds, "{detail}");
}

/// bi_attn on a small ragged shape (2 heads, 45 positions, 20 tokens of which 13 real):
/// the kernels' largest |difference| from the CPU twin over both directions.
fn bi_attn_error(be: &CudaBackend) -> glip_rt::error::Result<f32> {
    let s = BiAttnShape {
        batch: 1,
        heads: 2,
        head_dim: 256,
        n_img: 45,
        n_txt: 20,
    };
    let mut rng = Rng::new(9);
    let h = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
    let f = |v: &[f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
    let (q, k) = (
        h(rng.normal_vec(s.img_len(), 0.125)),
        h(rng.normal_vec(s.txt_len(), 1.0)),
    );
    let (vl, vv) = (
        h(rng.normal_vec(s.txt_len(), 1.0)),
        h(rng.normal_vec(s.img_len(), 1.0)),
    );
    let mask: Vec<i32> = (0..20).map(|j| i32::from(j < 13)).collect();
    let (want_v, want_t) = bi_attn(&s, &f(&q), &f(&k), &f(&vl), &f(&vv), &mask)?;
    let mut ws = BiAttnWorkspace::new(be, &s, 2)?;
    let mut ov = be.filled_f16(s.img_len(), f16::NAN)?;
    let mut ot = be.filled_f16(s.txt_len(), f16::NAN)?;
    bi_attn_f16(
        be,
        &s,
        &be.upload_f16(&q)?,
        &be.upload_f16(&k)?,
        &be.upload_f16(&vl)?,
        &be.upload_f16(&vv)?,
        &be.upload_i32(&mask)?,
        &mut ws,
        &mut ov,
        &mut ot,
    )?;
    let (got_v, got_t) = (f(&be.download(&ov)?), f(&be.download(&ot)?));
    Ok(max_abs_diff(&got_v, &want_v).max(max_abs_diff(&got_t, &want_t)))
}

#[test]
fn wrong_shuffle_width_is_caught_by_the_parity_test() {
    // A wrong width is deterministic and race-free: every schedule agrees, so the emulator's
    // reruns pass; the lanes of a row then disagree on the running max and the parity
    // against the CPU twin (what the bi_attn kernel rows assert, ≤ 2e-2) fails.
    let real = bi_attn_error(&device(None)).expect("the real kernels pass every check");
    println!("real bi_attn: max |diff| {real:.2e}");
    assert!(real <= 2e-2);
    match bi_attn_error(&device(Some("shfl_width"))) {
        Ok(e) => {
            println!("shfl_width: max |diff| {e:.2e} (or NaN)");
            assert!(
                e.is_nan() || e > 2e-2,
                "the wrong width went unnoticed: {e}"
            );
        }
        Err(Error::KernelCheck { check, detail, .. }) => {
            println!("shfl_width caught by the {check} check: {detail}")
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// ATSS post-processing of one 25×42 level with 8 labels and dense scores (about 3 900
/// candidates over the 1 000 top-k: the radix select's histogram runs).
/// Returns (kernels, CPU twin).
type Kept = Vec<Vec<Candidate>>;
fn nms_on(be: &CudaBackend) -> glip_rt::error::Result<(Kept, Kept)> {
    let levels = [Level {
        h: 25,
        w: 42,
        stride: 8,
    }];
    let (n, labels) = (25 * 42, 8);
    let mut rng = Rng::new(5);
    let scores = rng.uniform_vec(n * labels, 0.0, 0.08);
    let ctr = rng.normal_vec(n, 1.0);
    let reg = rng.normal_vec(n * 4, 0.5);
    let hw = [(190.0, 330.0)];
    let cfg = AtssConfig::default();
    let p = gpu_nms::params(&levels, labels, &hw, &cfg)?;
    let mut ws = NmsWorkspace::new(be, &p)?;
    let mut out = NmsOutputs::new(be, &p)?;
    let (s, c, r) = (
        be.upload_f32(&scores)?,
        be.upload_f32(&ctr)?,
        be.upload_f32(&reg)?,
    );
    gpu_nms::atss_postprocess(be, &p, &s, &c, &r, &mut ws, &mut out)?;
    let got = out.download(be, &p, &levels)?;
    let want = cpu_nms::postprocess(
        &PackedInputs {
            scores: &scores,
            centerness: &ctr,
            bbox_reg: &reg,
            num_labels: labels,
            levels: &levels,
        },
        &hw,
        &cfg,
    )?;
    Ok((got, want))
}

#[test]
fn real_nms_passes_every_check() {
    let (got, want) = nms_on(&device(None)).expect("the real kernels pass every check");
    let key = |v: &Kept| -> Vec<(usize, usize, u32)> {
        v[0].iter().map(|d| (d.level, d.anchor, d.label)).collect()
    };
    assert_eq!(key(&got), key(&want), "kept sets equal");
    assert_eq!(got[0].len(), 100, "a full 100 detections");
}

#[test]
fn uninitialised_shared_counter_is_caught_by_the_poison_run() {
    let (check, detail) =
        caught_in(Some("uninit_shared"), nms_on).expect("the uninitialised read must be caught");
    println!("uninit_shared caught by the {check} check: {detail}");
    // 0xFF.. as the start value gives a negative count: either the outputs differ from the
    // zero-initialised run, or the first use of that count is out of bounds.
    assert!(
        matches!(check, EmuCheck::Poison | EmuCheck::Bounds),
        "{check}: {detail}"
    );
}

#[test]
fn shared_array_overrun_is_caught_by_the_bounds_check() {
    let (check, detail) =
        caught_in(Some("shared_oob"), nms_on).expect("the shared overrun must be caught");
    println!("shared_oob caught by the {check} check: {detail}");
    assert_eq!(check, EmuCheck::Bounds, "{detail}");
}

/// The tensor-core GEMM (cp.async double buffering, ldmatrix, mma.sync) on 100×72×96: the
/// largest |difference| from the CPU GEMM.
fn gemm_error(be: &CudaBackend) -> glip_rt::error::Result<f32> {
    use glip_rt::backend::cpu::gemm::{gemm, Mat};
    let (m, n, k) = (100, 72, 96);
    let mut rng = Rng::new(3);
    let a: Vec<f16> = rng
        .normal_vec(m * k, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let b: Vec<f16> = rng
        .normal_vec(n * k, 0.1)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let bias = rng.normal_vec(n, 1.0);
    let f = |v: &[f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
    let (af, bf) = (f(&a), f(&b));
    let mut want = vec![0f32; m * n];
    assert!(gemm(
        m,
        n,
        k,
        Mat::rows(&af, k),
        Mat::transposed(&bf, k),
        &mut want,
        1.0,
        false
    ));
    want.iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v += bias[i % n]);
    let mut c = be.filled_f16(m * n, f16::NAN)?;
    glip_rt::backend::cuda::gemm::gemm_bias_f16(
        be,
        m,
        n,
        k,
        &be.upload_f16(&a)?,
        &be.upload_f16(&b)?,
        true,
        &be.upload_f32(&bias)?,
        &mut c,
    )?;
    Ok(max_abs_diff(&f(&be.download(&c)?), &want))
}

#[test]
fn missing_cp_async_wait_is_caught() {
    let real = gemm_error(&device(None)).expect("the real kernels pass every check");
    println!("real gemm: max |diff| {real:.2e}");
    assert!(real <= 1e-2);
    // Without the wait, the emulated cp.async lands only at a later wait: the first stage is
    // computed from shared memory as it started, which the poison run changes.
    match gemm_error(&device(Some("no_cp_wait"))) {
        Ok(e) => panic!("the missing wait went unnoticed (max |diff| {e})"),
        Err(Error::KernelCheck { check, detail, .. }) => {
            println!("no_cp_wait caught by the {check} check: {detail}");
            assert!(
                matches!(check, EmuCheck::Poison | EmuCheck::Race),
                "{check}: {detail}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn wrong_fragment_layout_is_caught_by_the_parity_test() {
    // Deterministic and race-free like the shuffle width: the emulated ldmatrix/mma follow
    // PTX's fragment layouts, so the swapped matrices give a wrong product.
    match gemm_error(&device(Some("ldmatrix_layout"))) {
        Ok(e) => {
            println!("ldmatrix_layout: max |diff| {e:.2e}");
            assert!(
                e.is_nan() || e > 1e-2,
                "the wrong layout went unnoticed: {e}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// The tensor-core GEMM's wrapper refuses rows that are not a multiple of 8 halves (its
/// 16-byte cp.async loads), with an error, on any device.
#[test]
fn tensor_core_gemm_refuses_unaligned_rows() {
    use glip_rt::backend::cuda::gemm::gemm_bias_f16;
    let be = glip_rt::testing::cuda_device("tensor_core_gemm_refuses_unaligned_rows");
    let a = be.filled_f16(12, f16::ONE).unwrap();
    let b = be.filled_f16(12, f16::ONE).unwrap();
    let bias = be.filled_f32(4, 0.0).unwrap();
    let mut c = be.filled_f16(12, f16::ZERO).unwrap();
    let e = gemm_bias_f16(&be, 3, 4, 3, &a, &b, true, &bias, &mut c).unwrap_err();
    assert!(e.to_string().contains("multiple of 8"), "{e}");
}

/// Scratch memory (`alloc_scratch`: workspaces the kernels write before reading) starts as
/// 0xFF bytes on the emulated device — NaN as a float, −1 as an integer — so a kernel that
/// reads an element nothing wrote gives a visibly wrong result instead of a lucky zero.
#[test]
fn scratch_memory_starts_as_garbage_on_the_emulated_device() {
    let be = CudaBackend::emulated_with(EmuChecks::Fast);
    let f = be.alloc_scratch::<f32>(5).unwrap();
    assert!(be.download(&f).unwrap().iter().all(|v| v.is_nan()));
    let h = be.alloc_scratch::<f16>(3).unwrap();
    assert!(be.download(&h).unwrap().iter().all(|v| v.is_nan()));
    let i = be.alloc_scratch::<i32>(4).unwrap();
    assert_eq!(be.download(&i).unwrap(), vec![-1; 4]);
    // Zeroed memory stays zero.
    let z = be.alloc_zeros::<f32>(4).unwrap();
    assert_eq!(be.download(&z).unwrap(), vec![0.0; 4]);
}
