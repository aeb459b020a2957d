//! `glip doctor --emulate`: every kernel family's self-check runs on the emulated CUDA device
//! (no GPU needed) and passes; plain `glip doctor` reports the build and exits 0 here.

use std::process::Command;

fn doctor(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_glip"))
        .arg("doctor")
        .args(args)
        .output()
        .unwrap();
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
