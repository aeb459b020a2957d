//! `glip bench` smoke test on the tiny config (random weights of its shapes), and its errors.

use glip_rt::testing::testdata;
use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    bench_env(args, &[])
}

/// `glip bench` on the tiny config with `args`, in an environment with `env` added.
fn bench_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_glip"))
        .arg("bench")
        .arg("--config")
        .arg(testdata().join("golden/12_e2e_tiny_config.yaml"))
        .arg("--bert-config")
        .arg(testdata().join("tiny_bert_config.json"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn tiny_bench_reports_every_stage() {
    let o = bench(&["--size", "240x320", "--runs", "1", "--tokens", "8"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // COCO real, COCO padded, synthetic 8: one timed run each, and the memory plan of each
    // shape from its recorded warm-up run.
    assert_eq!(out.matches("total per frame").count(), 3, "{out}");
    assert_eq!(out.matches("memory plan of").count(), 3, "{out}");
    assert!(out.contains("arena peak"), "{out}");
    for stage in [
        "backbone (Swin)",
        "fpn",
        "VLFuse x2",
        "BertEncoderLayer x2",
        "DyConv x2",
        "head",
        "post-processing",
    ] {
        assert!(out.contains(stage), "missing stage {stage}:\n{out}");
    }
}

/// `--json`: one JSON object on stdout (the report on stderr) with each case's latency
/// quantiles, frames/s, stages and plan; `--iters` is `--runs`, `--batch` repeats the image.
#[test]
fn json_report_has_latency_quantiles_and_the_plan() {
    let o = bench(&[
        "--size", "96x128", "--iters", "3", "--batch", "2", "--tokens", "8", "--coco", "false",
        "--json",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["batch"], 2, "{v}");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "{v}");
    let c = &cases[0];
    assert_eq!(
        (c["tokens"].as_u64(), c["runs"].as_u64()),
        (Some(8), Some(3)),
        "{c}"
    );
    let (p50, p99, fps) = (
        c["p50_ms"].as_f64().unwrap(),
        c["p99_ms"].as_f64().unwrap(),
        c["frames_per_s"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && fps > 0.0, "{c}");
    assert!(c["stages_s"]["head"].as_f64().is_some(), "{c}");
    // The CPU has no device clock: no device stage times.
    assert!(
        c["stages_device_s"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "{c}"
    );
    assert!(c["activations_arena_bytes"].as_u64().unwrap() > 0, "{c}");
    assert!(err.contains("latency over 3 runs"), "{err}");
}

#[test]
fn bad_bench_arguments_are_errors() {
    for (args, needle) in [
        (&["--batch", "0"][..], "--batch"),
        (&["--batch", "17"][..], "--batch"),
        (&["--size", "big"][..], "--size"),
        (&["--device", "cuda"][..], "CUDA"),
        (&["--tokens", "1"][..], "--tokens"),
    ] {
        let o = bench(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `glip bench --device emu --no-fallback`: the whole pipeline on the emulated CUDA device at
/// 320×320, per stage, every op on the device.
#[test]
fn emulated_bench_reports_stages_with_no_fallback() {
    let config = testdata().join("golden/12_e2e_tiny_config.yaml");
    let bert = testdata().join("tiny_bert_config.json");
    let out = emulated_bench(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--bert-config".as_ref(),
        bert.as_os_str(),
        "--no-fallback".as_ref(),
        "--size".as_ref(),
        "320x320".as_ref(),
        "--tokens".as_ref(),
        "8".as_ref(),
        "--coco".as_ref(),
        "false".as_ref(),
        "--check-cpu".as_ref(),
    ]);
    // --check-cpu: one frame on the CPU with the same weights, every tap compared.
    let line = out
        .lines()
        .find(|l| l.starts_with("  parity: "))
        .unwrap_or_else(|| panic!("no parity line:\n{out}"));
    let taps: usize = line["  parity: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    // Swin's 4 stages, 5 FPN levels, BERT and each tower layer's taps, the head's per level.
    assert!(taps > 20 && line.ends_with(": PASS"), "{line}");
    let rows = out
        .lines()
        .skip_while(|l| !l.contains("the device against the CPU"))
        .skip(2)
        .take_while(|l| !l.starts_with("  parity: "))
        .filter(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|w| w.parse().ok())
                .collect();
            v.len() == 3 && v[2] <= 1e-2
        })
        .count();
    assert_eq!(rows, taps, "{out}");
    for stage in [
        "backbone (Swin)",
        "VLFuse x2",
        "DyConv x2",
        "head",
        "post-processing",
    ] {
        // Each stage with its time on the device's clock next to the host's.
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(stage))
            .unwrap_or_else(|| panic!("missing stage {stage}:\n{out}"));
        let secs: Vec<f64> = line[2 + stage.len()..]
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(
            secs.len() == 2 && secs[1] > 0.0 && secs[1] <= secs[0] + 1e-3,
            "{line}"
        );
    }
    assert!(out.contains("seconds  device s"), "{out}");
    // Every op has a kernel: refusing fallbacks (above) changes nothing, no op is listed.
    assert!(!out.contains("in place of the device"), "{out}");
    // The warm-up run records the device plan; the timed run replays it from the arena.
    assert!(out.contains("device plan: "), "{out}");
    assert!(
        out.contains("replays of 320x320 at 8 tokens (batch 1): 2 from the arena, 0 op by op\n"),
        "{out}"
    );
    // The timed replay captured the frame as a CUDA graph (a recorded launch list here) and
    // ran it; the stage-table run, whose stage marks cut the frame, captured again.
    let graphs = out
        .lines()
        .find(|l| l.starts_with("  CUDA graphs: "))
        .unwrap_or_else(|| panic!("no CUDA graphs line:\n{out}"));
    let n: Vec<u64> = graphs
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        n.len() == 5 && n[0] > 1 && !graphs.contains("graphs off"),
        "{graphs}"
    );
    // The instance's device memory: a peak above the weights it holds.
    let line = out
        .lines()
        .find(|l| l.starts_with("device memory of this instance: peak "))
        .unwrap_or_else(|| panic!("no device memory line:\n{out}"));
    let mib: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    assert!(mib.len() == 3 && mib[0] >= mib[1] && mib[1] > 0.0, "{line}");
}

/// `glip bench --ops`: the op table in perf mode on the emulated device, every op of the
/// interface checked against the CPU and timed on both.
#[test]
fn ops_mode_times_every_op_of_the_interface() {
    let out = emulated_bench(&["--ops".as_ref()]);
    for op in glip_rt::backend::optable::interface_ops() {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(op))
            .unwrap_or_else(|| panic!("no row for {op}:\n{out}"));
        assert!(line.contains(" ms ") && line.contains(" ok "), "{line}");
    }
    assert!(!out.contains("FAIL"), "{out}");
}

/// `glip bench --device emu --runs 1 <args>` with the emulator's fast checks: its stdout,
/// after asserting that it succeeded on the emulated device.
fn emulated_bench(args: &[&std::ffi::OsStr]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_glip"))
        .args(["bench", "--device", "emu", "--runs", "1"])
        .args(args)
        .env("GLIP_EMU_CHECKS", "fast")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("emulated CUDA device"), "{out}");
    out
}

/// The binary's host block cache (src/block_cache.rs) is in use: with its smallest block
/// lowered to 4 KiB the tiny model's op outputs go through it and later frames take kept
/// blocks; GLIP_BLOCK_CACHE_MIB=0 turns it off; a bad value is an error.
#[test]
fn host_block_cache_is_reported_and_can_be_turned_off() {
    let run = |env: &[(&str, &str)]| {
        let args = [
            "--size", "96x128", "--runs", "3", "--tokens", "8", "--coco", "false", "--json",
        ];
        let o = bench_env(&args, env);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["host_block_cache"].clone()
    };
    let on = run(&[("GLIP_BLOCK_CACHE_MIN_KIB", "4")]);
    let (hits, misses) = (on["hits"].as_u64().unwrap(), on["misses"].as_u64().unwrap());
    // Four frames (the recording run, three timed): the last three take the first's blocks.
    assert!(hits > 2 * misses, "{on}");
    let off = run(&[
        ("GLIP_BLOCK_CACHE_MIN_KIB", "4"),
        ("GLIP_BLOCK_CACHE_MIB", "0"),
    ]);
    assert_eq!(
        (off["hits"].as_u64(), off["held_bytes"].as_u64()),
        (Some(0), Some(0)),
        "{off}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_glip"))
        .arg("bench")
        .env("GLIP_BLOCK_CACHE_MIB", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("GLIP_BLOCK_CACHE_MIB"),
        "{err}"
    );
}
