//! `glip doctor --emulate`: every kernel family's self-check runs on the emulated CUDA device
//! (no GPU needed) and passes; plain `glip doctor` reports the build and exits 0 on a machine
//! without a GPU, and fails there when a GPU is required (what the GPU check relies on).

use std::process::Command;

fn doctor(args: &[&str]) -> (bool, String) {
    doctor_env(args, None)
}

/// `glip doctor ARGS` with GLIP_REQUIRE_GPU set to `require` (or unset).
fn doctor_env(args: &[&str], require: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glip"));
    cmd.arg("doctor").args(args).env_remove("GLIP_REQUIRE_GPU");
    if let Some(v) = require {
        cmd.env("GLIP_REQUIRE_GPU", v);
    }
    let o = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn emulated_self_checks_cover_every_family_and_pass() {
    let (ok, out) = doctor(&["--emulate"]);
    println!("{out}");
    assert!(ok, "{out}");
    assert!(out.contains("emulated CUDA device"), "{out}");
    for family in glip_rt::kernels::families() {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(family))
            .unwrap_or_else(|| panic!("no self-check line for family {family}:\n{out}"));
        assert!(line.contains(" PASS "), "{line}");
    }
    assert!(out.contains("result: all checks passed"), "{out}");
}

#[test]
fn a_required_gpu_that_is_missing_fails() {
    let gpu = glip_rt::kernels::COMPILED && glip_rt::backend::cuda::CudaBackend::new(0).is_ok();
    if gpu {
        // A GPU machine: the requirement is met and the checks run on the GPU.
        let (ok, out) = doctor(&["--require-gpu"]);
        assert!(ok, "{out}");
        assert!(out.contains("result: all checks passed"), "{out}");
        return;
    }
    let (ok, out) = doctor(&[]);
    assert!(ok, "{out}");
    assert!(out.contains("result: CPU backend only"), "{out}");
    for (args, env) in [(&["--require-gpu"][..], None), (&[][..], Some("1"))] {
        let (ok, out) = doctor_env(args, env);
        assert!(
            !ok,
            "{args:?} GLIP_REQUIRE_GPU={env:?} passed without a GPU:\n{out}"
        );
        assert!(
            out.contains("no usable GPU, and one is required"),
            "{args:?} {env:?}: {out}"
        );
    }
    // Only "1" requires one, as for the tests.
    let (ok, out) = doctor_env(&[], Some("0"));
    assert!(ok, "{out}");
}
