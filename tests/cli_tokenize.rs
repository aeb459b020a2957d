//! `glip tokenize` end to end: JSON on success, a clear error and non-zero exit otherwise.

use std::process::Command;

fn glip(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_glip"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tokenize_parses_user_prompt() {
    let o = glip(&["tokenize", "--prompt", "person. bicycle. traffic light."]);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<u64> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&101));
    assert_eq!(ids.last(), Some(&102));
    let ph = v["phrases"].as_array().unwrap();
    assert_eq!(ph.len(), 3);
    assert_eq!(ph[2]["phrase"], "traffic light");
    assert_eq!(ph[2]["tokens"], serde_json::json!(["traffic", "light"]));
    assert_eq!(ph[0]["token_indices"], serde_json::json!([1]));
    assert_eq!(v["tokens"].as_array().unwrap().len(), ids.len());
}

#[test]
fn tokenize_with_phrases() {
    let o = glip(&[
        "tokenize",
        "--prompt",
        "bobble heads on top of the shelf",
        "--phrases",
        "bobble heads",
        "the shelf",
    ]);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["phrases"][0]["token_indices"],
        serde_json::json!([1, 2, 3])
    );
    assert_eq!(v["phrases"][1]["token_indices"], serde_json::json!([7, 8]));
}

fn assert_fails(args: &[&str], needle: &str) {
    let o = glip(args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} lacks {needle:?}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn tokenize_bad_prompts() {
    assert_fails(&["tokenize", "--prompt", ""], "prompt: the prompt is empty");
    assert_fails(&["tokenize", "--prompt", " . .. "], "contains no phrase");
    assert_fails(
        &["tokenize", "--prompt", "a dog", "--phrases", "cat"],
        "does not occur",
    );
    assert_fails(
        &[
            "tokenize",
            "--prompt",
            "a dog",
            "--tokenizer",
            "/nonexistent/tokenizer.json",
        ],
        "/nonexistent/tokenizer.json",
    );
}
