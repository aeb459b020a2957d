//! The GPU-test gate: without a GPU a kernel test runs on the emulated device and prints
//! `device: emulated`; with GLIP_REQUIRE_GPU=1 the same test fails instead. Checked by
//! re-running this test binary on its own probe test in a child process.

use glip_rt::testing::cuda_or_skip;
use std::process::Command;

#[test]
fn probe_gpu() {
    if let Some(be) = cuda_or_skip("probe_gpu") {
        println!(
            "probe_gpu: device {} present",
            be.name().unwrap_or_default()
        );
    }
}

fn run_probe(require: bool) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "probe_gpu", "--nocapture", "--test-threads=1"]);
    if require {
        cmd.env("GLIP_REQUIRE_GPU", "1");
    } else {
        cmd.env_remove("GLIP_REQUIRE_GPU");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn gate_skips_or_fails_as_documented() {
    let has_gpu = glip_rt::kernels::COMPILED && glip_rt::backend::cuda::CudaBackend::new(0).is_ok();
    let (ok, text) = run_probe(false);
    if has_gpu {
        assert!(
            text.contains("device: GPU"),
            "the GPU must be named:\n{text}"
        );
    }
    assert!(ok, "probe must pass without GLIP_REQUIRE_GPU:\n{text}");
    let (ok_req, text_req) = run_probe(true);
    if has_gpu {
        assert!(
            ok_req,
            "with a GPU the probe passes under GLIP_REQUIRE_GPU=1:\n{text_req}"
        );
    } else {
        assert!(
            text.contains("device: emulated"),
            "the emulated device must be named:\n{text}"
        );
        assert!(
            !ok_req,
            "without a GPU the probe must FAIL under GLIP_REQUIRE_GPU=1:\n{text_req}"
        );
    }
}
