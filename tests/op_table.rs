//! The op table (backend/optable.rs) on every device backend: every op of the interface has
//! a row, every row agrees with the CPU backend within its tolerance (the emulated device in
//! CI, a GPU when present), and a planted bug in each kernel family added with the table is
//! caught by its rows. The kernel rows (backend/cuda/kernel_rows) reach the launch wrappers'
//! own parameters the op interface does not (image-axis splits, packed logits rows, batch-8
//! ATSS, GEMM tails), each against its CPU twin: on a GPU at GLIP-T's sizes, on the emulated
//! device at reduced ones, one test per family so they run side by side.

use glip_rt::backend::cuda::kernel_rows::{self, Scale};
use glip_rt::backend::cuda::{CudaBackend, EmuChecks};
use glip_rt::backend::optable::{self, check, interface_ops, rows};
use glip_rt::testing::test_backends;
use glip_rt::Tensor;

#[test]
fn every_op_of_the_interface_has_a_row() {
    let table = rows(1).unwrap();
    let ops = interface_ops();
    assert!(ops.len() >= 40, "the trait's ops were not found: {ops:?}");
    let missing: Vec<_> = ops
        .iter()
        .filter(|op| !table.iter().any(|r| r.op == **op))
        .collect();
    assert!(
        missing.is_empty(),
        "ops without a row in the op table: {missing:?}"
    );
    let unknown: Vec<_> = table
        .iter()
        .filter(|r| !ops.contains(&r.op))
        .map(|r| r.op)
        .collect();
    assert!(unknown.is_empty(), "rows of no op: {unknown:?}");
}

#[test]
fn every_row_matches_the_cpu_on_every_device() {
    let table = rows(1).unwrap();
    for (name, be) in test_backends().into_iter().filter(|(n, _)| n != "cpu") {
        let mut failed = Vec::new();
        for row in &table {
            let v = check(row, &*be);
            println!(
                "{name:>4} {:<22} {:<58} nse {:.1e} max |diff| {:.1e} (tol {:e}) {}",
                v.op,
                v.case,
                v.nse,
                v.max_abs,
                v.tol,
                if v.passed { "ok" } else { "FAIL" }
            );
            if !v.passed {
                failed.push(format!("{} {}: {:?}", v.op, v.case, v.problem));
            }
        }
        assert!(failed.is_empty(), "{name}: {failed:#?}");
        assert!(be.fallbacks().is_empty(), "{name}: {:?}", be.fallbacks());
    }
}

/// Every kernel row of `family` on the device (a GPU, else the emulated one) within its
/// tolerance of the CPU twin.
fn kernel_rows_of(family: &str) {
    let be = glip_rt::testing::cuda_device(&format!("kernel rows of {family}"));
    let rows: Vec<_> = kernel_rows::rows(Scale::of(&be))
        .into_iter()
        .filter(|r| r.family == family)
        .collect();
    assert!(!rows.is_empty(), "no kernel rows of {family}");
    let mut failed = Vec::new();
    for row in &rows {
        let v = kernel_rows::check(row, &be);
        println!(
            "{:<28} {:<80} nse {:.1e} max |diff| {:.1e} {}",
            v.op,
            v.case,
            v.nse,
            v.max_abs,
            if v.passed { "ok" } else { "FAIL" }
        );
        if !v.passed {
            failed.push(format!("{} {}: {:?}", v.op, v.case, v.problem));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

macro_rules! kernel_row_tests {
    ($($test:ident: $family:literal,)*) => {$(
        #[test]
        fn $test() {
            kernel_rows_of($family);
        }
    )*};
}

kernel_row_tests! {
    kernel_rows_of_elementwise: "elementwise",
    kernel_rows_of_gemm: "gemm",
    kernel_rows_of_bi_attn: "bi_attn",
    kernel_rows_of_deform_conv: "deform_conv",
    kernel_rows_of_group_norm: "group_norm",
    kernel_rows_of_logits: "logits",
    kernel_rows_of_nms: "nms",
}

/// The kernel rows catch planted bugs: GroupNorm's loop one element past its piece, and the
/// tensor-core GEMM's A fragments loaded in the wrong layout.
#[test]
fn planted_bugs_are_caught_by_the_kernel_rows() {
    for (mutant, family) in [("off_by_one", "group_norm"), ("ldmatrix_layout", "gemm")] {
        let mut be = CudaBackend::emulated_with(EmuChecks::Fast);
        be.emulator_mut()
            .expect("emulated")
            .set_mutant(Some(mutant))
            .expect("mutant compiled in");
        let failing = kernel_rows::rows(Scale::Reduced)
            .iter()
            .filter(|r| r.family == family)
            .filter(|r| {
                let v = kernel_rows::check(r, &be);
                println!("{mutant}: {} {} -> {:?}", v.op, v.case, v.problem);
                !v.passed
            })
            .count();
        assert!(failing > 0, "{mutant} passed every {family} kernel row");
    }
}

/// The verdicts of `ops`' rows on the emulated device (outputs poisoned) running `mutant`.
fn verdicts(mutant: &str, ops: &[&str]) -> Vec<optable::Verdict> {
    let mut be = CudaBackend::emulated_with(EmuChecks::Fast);
    be.set_poison_outputs(true);
    be.emulator_mut()
        .expect("emulated")
        .set_mutant(Some(mutant))
        .expect("mutant compiled in");
    let table = rows(1).unwrap();
    table
        .iter()
        .filter(|r| ops.contains(&r.op))
        .map(|r| check(r, &be))
        .collect()
}

/// The rows of `family`'s ops on the emulated device running `mutant`: how many fail.
fn failing_rows(mutant: &str, ops: &[&str]) -> usize {
    let mut be = CudaBackend::emulated_with(EmuChecks::Fast);
    be.emulator_mut()
        .expect("emulated")
        .set_mutant(Some(mutant))
        .expect("mutant compiled in");
    let table = rows(1).unwrap();
    let mine: Vec<_> = table.iter().filter(|r| ops.contains(&r.op)).collect();
    assert!(!mine.is_empty());
    mine.iter()
        .filter(|r| {
            let v = check(r, &be);
            println!("{mutant}: {} {} -> {:?}", v.op, v.case, v.problem);
            !v.passed
        })
        .count()
}

#[test]
fn planted_bugs_in_the_new_families_are_caught_by_the_table() {
    // layout: a Swin window gather rolled the wrong way.
    assert!(failing_rows("roll_sign", &["window_partition", "window_merge_add"]) > 0);
    // reduce: LayerNorm with the unbiased variance.
    assert!(failing_rows("unbiased_var", &["layer_norm"]) > 0);
    // attention: the online softmax without rescaling (only more than one key tile can
    // tell), in the SIMT kernel and in the tensor-core one.
    assert!(failing_rows("no_rescale", &["self_attention", "window_attention"]) > 0);
    assert!(failing_rows("tc_no_rescale", &["self_attention"]) > 0);
    // logits: the grouped launch over the pyramid levels with a level boundary off by one.
    assert!(failing_rows("level_edge", &["dot_logits"]) > 0);
}

/// A gather that leaves its last output unwritten: the poisoned output shows it as
/// non-finite in the rows (pad_to_multiple with nothing to pad included).
#[test]
fn an_unwritten_output_is_caught_by_the_poison() {
    let v = verdicts(
        "skip_last",
        &["pad_to_multiple", "nchw_to_nhwc", "window_partition"],
    );
    assert!(!v.is_empty());
    for x in &v {
        println!("skip_last: {} {} -> {:?}", x.op, x.case, x.problem);
        assert!(
            x.problem
                .as_deref()
                .is_some_and(|p| p.contains("non-finite")),
            "{} {}: {:?}",
            x.op,
            x.case,
            x.problem
        );
    }
}

#[test]
fn a_token_id_outside_the_vocabulary_is_an_error_on_every_backend() {
    for (name, be) in test_backends() {
        let word = be
            .weight(&Tensor::from_f32(&[5, 4], vec![0.5; 20]).unwrap())
            .unwrap();
        let pos = be
            .weight(&Tensor::from_f32(&[3, 4], vec![0.25; 12]).unwrap())
            .unwrap();
        let tt = be
            .weight(&Tensor::from_f32(&[4], vec![1.0; 4]).unwrap())
            .unwrap();
        let ids = Tensor::from_i32(&[1, 2], vec![3, 5]).unwrap();
        let e = be.bert_embeddings(&ids, &word, &pos, &tt).unwrap_err();
        assert!(
            e.to_string()
                .contains("token id 5 outside the vocabulary of 5"),
            "{name}: {e}"
        );
    }
}

#[test]
fn the_table_is_deterministic_and_never_zero() {
    let (a, b) = (rows(7).unwrap(), rows(7).unwrap());
    for (x, y) in a.iter().zip(&b) {
        for (p, q) in x.args.iter().zip(&y.args) {
            let (p, q) = (tensor_of(p), tensor_of(q));
            assert_eq!(p.to_f32_vec().unwrap(), q.to_f32_vec().unwrap(), "{}", x.op);
            let v = p.to_f32_vec().unwrap();
            assert!(
                v.iter().any(|&z| z != 0.0),
                "{} {}: an all-zero input",
                x.op,
                x.case
            );
        }
    }
}

fn tensor_of(a: &optable::Arg) -> &Tensor {
    match a {
        optable::Arg::Act(t)
        | optable::Arg::Weight(t)
        | optable::Arg::Upload(t)
        | optable::Arg::Host(t) => t,
    }
}

/// The GLIP-T-sized rows (a GPU's, in `glip doctor`) are well-formed: each runs on the CPU
/// backend and gives finite outputs of the op's shapes.
#[test]
fn glip_t_rows_run_on_the_cpu() {
    use glip_rt::backend::cpu::CpuBackend;
    let t0 = std::time::Instant::now();
    for row in optable::glip_t_rows(2).unwrap() {
        let t = std::time::Instant::now();
        let args: Vec<Tensor> = row
            .args
            .iter()
            .map(|a| tensor_of(a).try_clone().unwrap())
            .collect();
        let out = (row.run)(&CpuBackend, &args)
            .unwrap_or_else(|e| panic!("{} {}: {e}", row.op, row.case));
        assert!(!out.is_empty());
        for o in &out {
            assert!(
                o.to_f32_vec().unwrap().iter().all(|v| v.is_finite()),
                "{}",
                row.op
            );
        }
        println!(
            "{} {}: {:.2} s",
            row.op,
            row.case,
            t.elapsed().as_secs_f64()
        );
    }
    println!("all: {:.1} s", t0.elapsed().as_secs_f64());
}
