//! `glip tokenize`: show how GLIP tokenizes a prompt and which tokens each phrase maps to.

use super::crate_result::Result;
use glip_rt::tokenizer::{GlipTokenizer, Prompt};
use glip_rt::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The caption, e.g. "person. bicycle. traffic light." (without --phrases its
    /// '.'-separated pieces are the phrases).
    #[arg(long)]
    pub prompt: String,
    /// Phrases to locate in the caption (first occurrence); replaces the '.' splitting.
    #[arg(long, num_args = 1..)]
    pub phrases: Vec<String>,
    /// A HuggingFace tokenizer.json (default: the embedded bert-base-uncased).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

pub fn run(args: Args) -> Result {
    let mut stdout = super::out::Out::new();
    let tok = GlipTokenizer::load(args.tokenizer.as_deref())?;
    let prompt = if args.phrases.is_empty() {
        Prompt::parse(&args.prompt)?
    } else {
        if args.prompt.trim().is_empty() {
            return Err(Error::Prompt("the prompt is empty".into()));
        }
        Prompt::with_phrases(&args.prompt, &args.phrases)?
    };
    let e = tok.encode(&prompt)?;
    let model_tokens = e.model_label_to_tokens();
    let phrases: Vec<serde_json::Value> = e
        .prompt
        .phrases
        .iter()
        .zip(&model_tokens)
        .map(|(p, t)| {
            serde_json::json!({
                "label": p.label,
                "phrase": p.name,
                "spans": p.spans,
                "token_indices": t,
                "tokens": t.iter().map(|&i| e.tokens.get(i).cloned().unwrap_or_default()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let out = serde_json::json!({
        "caption": e.prompt.caption,
        "ids": e.real_ids(),
        "tokens": e.real_ids().iter().map(|&id| tok.id_to_token(id).unwrap_or_default()).collect::<Vec<_>>(),
        "num_tokens": e.num_real,
        "num_tokens_untruncated": e.untruncated_ids.len(),
        "truncated": e.truncated(),
        "phrases": phrases,
    });
    let text = serde_json::to_string_pretty(&out)
        .map_err(|err| Error::Invalid(format!("JSON output: {err}")))?;
    outln!(stdout, "{text}");
    if e.truncated() {
        say!(
            "warning: the prompt has {} tokens; the model sees the first 256{}",
            e.untruncated_ids.len(),
            match e.labels_without_tokens() {
                l if l.is_empty() => String::new(),
                l => format!(" and labels {l:?} are cut off"),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
