//! One stdout policy for every command (src/cli/out.rs), through the binary: a closed pipe
//! ends the command quietly with exit 0 and stops the work; a full disk (`/dev/full`) is an
//! error with exit 1; never a panic, never a silent 0.

use glip_rt::testing::testdata;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

#[derive(Clone, Copy, Debug)]
enum Sink {
    /// `> /dev/full`: every write fails with ENOSPC.
    Full,
    /// A pipe whose reader is already gone: every write fails with EPIPE.
    Closed,
}

/// This build's binary, or `GLIP_BIN` (to see the tests fail on a build before the fix).
fn glip_bin() -> PathBuf {
    std::env::var_os("GLIP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_glip")))
}

fn golden(name: &str) -> PathBuf {
    testdata().join("golden").join(name)
}

fn tmp(name: &str) -> PathBuf {
    glip_rt::testing::test_tmp("glip-cli-stdout", name)
}

fn model_args() -> Vec<String> {
    vec![
        "--config".into(),
        golden("12_e2e_tiny_config.yaml").display().to_string(),
        "--weights".into(),
        golden("12_e2e_tiny_weights.safetensors")
            .display()
            .to_string(),
        "--bert-config".into(),
        testdata()
            .join("tiny_bert_config.json")
            .display()
            .to_string(),
    ]
}

fn run(args: &[String], sink: Sink, stdin: Vec<u8>) -> Output {
    let stdout: Stdio = match sink {
        Sink::Full => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into(),
        Sink::Closed => {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            writer.into()
        }
    };
    let mut child = Command::new(glip_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = sin.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// Every command, with arguments that make it write results to stdout.
fn commands() -> Vec<(&'static str, Vec<String>, Vec<u8>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let photo = golden("12_e2e_tiny_photo.png").display().to_string();
    let frame = glip_rt::preprocess::load_image(&golden("12_e2e_tiny_photo.png"), true)
        .unwrap()
        .data;
    let mut detect = s(&["detect"]);
    detect.extend(model_args());
    detect.extend(s(&["--prompt", "person. cup.", "--image"]));
    // Two good images, then one that does not exist: its error shows whether the command
    // went on computing after its reader had gone.
    detect.extend([photo.clone(), photo.clone(), "/nonexistent/last.png".into()]);
    let mut stream = s(&["stream"]);
    stream.extend(model_args());
    stream.extend(s(&[
        "--prompt", "person.", "--input", "raw", "--width", "512", "--height", "512",
    ]));
    let mut frames = frame.clone();
    frames.extend_from_slice(&frame);
    frames.extend_from_slice(&frame[..100]); // a cut third frame: an error if reached
    let mut bench = s(&["bench", "--config"]);
    bench.push(golden("12_e2e_tiny_config.yaml").display().to_string());
    bench.push("--bert-config".into());
    bench.push(
        testdata()
            .join("tiny_bert_config.json")
            .display()
            .to_string(),
    );
    bench.extend(s(&["--size", "64x64", "--runs", "1", "--coco", "false"]));
    let pth = testdata()
        .join("pth/tiny_glip_model.pth")
        .display()
        .to_string();
    vec![
        (
            "tokenize",
            s(&["tokenize", "--prompt", "person. cup."]),
            vec![],
        ),
        ("doctor", s(&["doctor"]), vec![]),
        ("bench", bench, vec![]),
        (
            "convert",
            vec![
                "convert".into(),
                pth,
                "-o".into(),
                tmp("c.safetensors").display().to_string(),
            ],
            vec![],
        ),
        ("detect", detect, vec![]),
        ("stream", stream, frames),
        (
            "coco-eval",
            vec![
                "coco-eval".into(),
                "--gt".into(),
                testdata()
                    .join("cocoeval/small_gt.json")
                    .display()
                    .to_string(),
                "--dt".into(),
                testdata()
                    .join("cocoeval/small_dt.json")
                    .display()
                    .to_string(),
            ],
            vec![],
        ),
    ]
}

#[test]
fn a_full_stdout_is_an_error_with_exit_1() {
    for (name, args, stdin) in commands() {
        let o = run(&args, Sink::Full, stdin);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{name}: panicked:\n{err}");
        assert_eq!(o.status.code(), Some(1), "{name}: exit code\n{err}");
        assert!(
            err.contains("error: stdout") && err.contains("No space left"),
            "{name}: the error must name stdout and the cause:\n{err}"
        );
        // One error, then the command stops (detect/stream do not go on to later inputs).
        assert!(
            !err.contains("last.png") && !err.contains("inside a frame"),
            "{name}:\n{err}"
        );
    }
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0_and_stops_the_work() {
    for (name, args, stdin) in commands() {
        let o = run(&args, Sink::Closed, stdin);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{name}: panicked:\n{err}");
        assert_eq!(o.status.code(), Some(0), "{name}: exit code\n{err}");
        assert!(
            !err.contains("error"),
            "{name}: a closed pipe is not an error:\n{err}"
        );
        // detect stops at the first image it cannot deliver: the missing third image is
        // never reached; stream never reaches its cut third frame.
        assert!(!err.contains("last.png"), "{name} kept computing:\n{err}");
    }
}

#[test]
fn a_pipe_closed_after_some_output_stops_detect_with_exit_0() {
    // `glip detect … | head -c 10`: the reader takes a few bytes of the first image's
    // result and leaves while the second image is computed; the third image (missing, an
    // error if reached) must never be processed, and the exit is 0.
    let photo = golden("12_e2e_tiny_photo.png").display().to_string();
    let mut args = vec!["detect".to_string()];
    args.extend(model_args());
    args.extend(["--prompt".into(), "person. cup.".into(), "--image".into()]);
    args.extend([photo.clone(), photo, "/nonexistent/last.png".into()]);
    let mut child = Command::new(glip_bin())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut so, &mut first).unwrap();
    drop(so);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !err.contains("last.png"),
        "kept computing after the reader left:\n{err}"
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
}
