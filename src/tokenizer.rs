//! GLIP's text input: the prompt string, its tokenization and the positive map that ties
//! each label (class or phrase) to the tokens of its name.
//!
//! Reproduces, for the bert-base-uncased WordPiece tokenizer GLIP-T uses:
//! * the model-side encoding (`generalized_vl_rcnn.py:212-217`): `batch_encode_plus(caption,
//!   max_length=256, padding="max_length", truncation=True, return_special_tokens_mask=True)`;
//! * the evaluation prompt built from class names (`engine/inference.py`
//!   `create_queries_and_maps`, `clean_name`): names joined by ". ", no trailing separator;
//! * the positive map (`create_positive_dict` / `predictor_glip.create_positive_map`): every
//!   character span [start, end) is mapped to tokens on the UNtruncated, unpadded tokenization,
//!   start via `char_to_token(start)` (then start+1, start+2), end via `char_to_token(end-1)`
//!   (then end-2, end-3); a span is skipped when either stays unmapped;
//! * chunked evaluation (`TEST.CHUNKED_EVALUATION`, `create_queries_and_maps_from_dataset`):
//!   the label list cut into consecutive groups of N labels, one prompt per group, global label
//!   ids kept ([`chunk_by_count`]); plus [`chunk_to_fit`], which picks the groups so that no
//!   prompt is truncated (GLIP has no such mode; it is the safe default for long label lists).
//!
//! Character offsets, not bytes: GLIP's spans index Python strings, so every span here counts
//! Unicode scalar values (`char`s) and the encoding uses `encode_char_offsets`.

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// GLIP's `MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`: the model-side sequence length.
pub const MAX_QUERY_LEN: usize = 256;

/// The tokenizer.json embedded in the binary (bert-base-uncased vocabulary).
const DEFAULT_TOKENIZER_JSON: &[u8] = include_bytes!("../assets/bert-base-uncased/tokenizer.json");

/// GLIP's `DATASETS.SEPARATION_TOKENS` for the evaluation prompt.
pub const EVAL_SEPARATOR: &str = ". ";

/// Which GLIP code path a prompt follows; it decides how [`EncodedPrompt::label_to_tokens`]
/// is built (the binary/normalized maps are the same for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptPath {
    /// `create_queries_and_maps` → `create_positive_dict`: token indices appended per span, on
    /// the untruncated tokenization (indices >= 256 possible), a label with no mapped span absent
    /// (here: an empty list).
    Eval,
    /// `create_positive_map` → `create_positive_map_label_to_token_from_positive_map(plus=1)`:
    /// the non-zero columns of the [n, 256] map (sorted, unique, < 256).
    Demo,
}

/// One label of a prompt: its 1-based label id, its name (class name or phrase text) and the
/// character spans [start, end) of the caption that stand for it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Phrase {
    pub label: u32,
    pub name: String,
    pub spans: Vec<(usize, usize)>,
}

/// A caption plus the phrases (labels) to ground in it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Prompt {
    pub caption: String,
    pub phrases: Vec<Phrase>,
    pub path: PromptPath,
}

/// GLIP's `clean_name` (`engine/inference.py:104-108`), quirks included: the greedy `\(.*\)`
/// removes from the first "(" to the last ")", and "  " → " " is a single left-to-right pass
/// (three spaces become two).
pub fn clean_name(name: &str) -> String {
    let mut s = remove_paren_groups(name);
    s = s.replace('_', " ");
    s.replace("  ", " ")
}

/// `re.sub(r"\(.*\)", "", s)`: leftmost match, greedy, `.` excluding '\n'; repeated on the rest.
fn remove_paren_groups(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        // Leftmost "(" whose line (up to the next '\n') contains a later ")".
        let mut found = None;
        for (i, c) in rest.char_indices() {
            if c != '(' {
                continue;
            }
            let line_end = rest[i..].find('\n').map_or(rest.len(), |k| i + k);
            if let Some(j) = rest[i..line_end].rfind(')') {
                found = Some((i, i + j + 1));
                break;
            }
        }
        match found {
            Some((a, b)) => {
                out.push_str(&rest[..a]);
                rest = &rest[b..];
            }
            None => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// Number of chars of `s` (GLIP's offsets are Python string indices).
fn char_len(s: &str) -> usize {
    s.chars().count()
}

impl Prompt {
    /// GLIP's evaluation prompt for class names with labels 1..=n (`create_queries_and_maps`):
    /// names cleaned by [`clean_name`], joined by ". ", each name's span recorded.
    pub fn from_class_names<S: AsRef<str>>(names: &[S]) -> Result<Prompt> {
        let labels: Vec<u32> = (1..=names.len() as u32).collect();
        Prompt::from_labeled_class_names(&labels, names)
    }

    /// The evaluation prompt for a subset of a label set (one chunk): `labels[i]` is the
    /// global (1-based) label id of `names[i]`.
    pub fn from_labeled_class_names<S: AsRef<str>>(labels: &[u32], names: &[S]) -> Result<Prompt> {
        if names.is_empty() {
            return Err(Error::Prompt("no class names given".into()));
        }
        if labels.len() != names.len() {
            return Err(Error::Prompt(format!(
                "{} labels for {} class names",
                labels.len(),
                names.len()
            )));
        }
        let mut caption = String::new();
        let mut phrases = Vec::with_capacity(names.len());
        for (i, (name, &label)) in names.iter().zip(labels).enumerate() {
            let name = clean_name(name.as_ref());
            let start = char_len(&caption);
            caption.push_str(&name);
            let end = char_len(&caption);
            phrases.push(Phrase {
                label,
                name,
                spans: vec![(start, end)],
            });
            if i + 1 != names.len() {
                caption.push_str(EVAL_SEPARATOR);
            }
        }
        if caption.trim().is_empty() {
            return Err(Error::Prompt(
                "every class name is empty after clean_name".into(),
            ));
        }
        Ok(Prompt {
            caption,
            phrases,
            path: PromptPath::Eval,
        })
    }

    /// The demo's list mode (`GLIPDemo.compute_prediction` with a list of names,
    /// `predictor_glip.py:183-196`): caption = every name followed by " . " (names not
    /// cleaned, trailing separator kept); name j gets label j+1.
    pub fn demo_class_list<S: AsRef<str>>(names: &[S]) -> Result<Prompt> {
        let mut caption = String::new();
        let mut phrases = Vec::with_capacity(names.len());
        for (j, name) in names.iter().enumerate() {
            let name = name.as_ref();
            let start = char_len(&caption);
            phrases.push(Phrase {
                label: j as u32 + 1,
                name: name.to_string(),
                spans: vec![(start, start + char_len(name))],
            });
            caption.push_str(name);
            caption.push_str(" . ");
        }
        Prompt::from_phrases(&caption, phrases, PromptPath::Demo)
    }

    /// A free caption with explicit character spans per phrase (the demo's `custom_entity`
    /// with `char_bounds`); phrase j gets label j+1. `phrases[j] = (name, [start, end))`.
    pub fn with_spans(caption: &str, phrases: &[(&str, (usize, usize))]) -> Result<Prompt> {
        let phrases = phrases
            .iter()
            .enumerate()
            .map(|(j, &(name, span))| Phrase {
                label: j as u32 + 1,
                name: name.to_string(),
                spans: vec![span],
            })
            .collect();
        Prompt::from_phrases(caption, phrases, PromptPath::Demo)
    }

    /// A free caption and phrase texts, each located at its first occurrence in the caption
    /// (the demo's `custom_entity` with `span`; matched literally, not as a regex; if the exact
    /// text is absent a case-insensitive match is taken). Phrase j gets label j+1.
    pub fn with_phrases<S: AsRef<str>>(caption: &str, phrases: &[S]) -> Result<Prompt> {
        let mut out = Vec::with_capacity(phrases.len());
        for (j, p) in phrases.iter().enumerate() {
            let p = p.as_ref();
            let span = find_chars(caption, p, 0).ok_or_else(|| {
                Error::Prompt(format!(
                    "phrase {p:?} does not occur in the caption {caption:?}"
                ))
            })?;
            out.push(Phrase {
                label: j as u32 + 1,
                name: p.to_string(),
                spans: vec![span],
            });
        }
        Prompt::from_phrases(caption, out, PromptPath::Demo)
    }

    /// A user prompt such as "person. bicycle. traffic light.": the caption is the text as
    /// given, the phrases are its '.'-separated pieces (trimmed, empty ones skipped), each
    /// located in order in the caption. Phrase j gets label j+1.
    pub fn parse(text: &str) -> Result<Prompt> {
        if text.trim().is_empty() {
            return Err(Error::Prompt("the prompt is empty".into()));
        }
        let mut phrases = Vec::new();
        let mut char_pos = 0usize;
        for piece in text.split('.') {
            let name = piece.trim();
            if !name.is_empty() {
                let lead = piece.chars().take_while(|c| c.is_whitespace()).count();
                let start = char_pos + lead;
                let end = start + char_len(name);
                phrases.push(Phrase {
                    label: phrases.len() as u32 + 1,
                    name: name.to_string(),
                    spans: vec![(start, end)],
                });
            }
            char_pos += char_len(piece) + 1;
        }
        if phrases.is_empty() {
            return Err(Error::Prompt(format!(
                "the prompt {text:?} contains no phrase (only '.' and spaces)"
            )));
        }
        Prompt::from_phrases(text, phrases, PromptPath::Demo)
    }

    /// A caption with given phrases, checked: non-empty caption, at least one phrase, every
    /// span non-empty and inside the caption.
    pub fn from_phrases(caption: &str, phrases: Vec<Phrase>, path: PromptPath) -> Result<Prompt> {
        if caption.trim().is_empty() {
            return Err(Error::Prompt("the caption is empty".into()));
        }
        if phrases.is_empty() {
            return Err(Error::Prompt(format!(
                "no phrase given for the caption {caption:?}"
            )));
        }
        let n = char_len(caption);
        for p in &phrases {
            if p.spans.is_empty() {
                return Err(Error::Prompt(format!(
                    "phrase {:?} has no character span",
                    p.name
                )));
            }
            for &(a, b) in &p.spans {
                if a >= b || b > n {
                    return Err(Error::Prompt(format!(
                        "phrase {:?}: span [{a}, {b}) is empty or outside the caption ({n} characters)",
                        p.name
                    )));
                }
            }
        }
        Ok(Prompt {
            caption: caption.to_string(),
            phrases,
            path,
        })
    }

    pub fn labels(&self) -> Vec<u32> {
        self.phrases.iter().map(|p| p.label).collect()
    }
    pub fn names(&self) -> Vec<&str> {
        self.phrases.iter().map(|p| p.name.as_str()).collect()
    }
}

/// Char span of the first occurrence of `needle` in `hay` at or after char `from`: exact
/// first, else case-insensitive (char-wise lower-casing).
fn find_chars(hay: &str, needle: &str, from: usize) -> Option<(usize, usize)> {
    let h: Vec<char> = hay.chars().collect();
    let n: Vec<char> = needle.chars().collect();
    if n.is_empty() || n.len() > h.len() {
        return None;
    }
    let eq_exact = |a: &char, b: &char| a == b;
    let eq_fold = |a: &char, b: &char| a.to_lowercase().eq(b.to_lowercase());
    for eq in [&eq_exact as &dyn Fn(&char, &char) -> bool, &eq_fold] {
        for s in from..=h.len() - n.len() {
            if h[s..s + n.len()].iter().zip(&n).all(|(a, b)| eq(a, b)) {
                return Some((s, s + n.len()));
            }
        }
    }
    None
}

/// A prompt tokenized as GLIP does, with its positive map.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EncodedPrompt {
    pub prompt: Prompt,
    /// Model-side ids, truncated and padded to [`MAX_QUERY_LEN`] ([PAD] = 0).
    pub input_ids: Vec<u32>,
    /// 1 on [CLS] … [SEP], 0 on padding.
    pub attention_mask: Vec<u32>,
    /// 1 on [CLS], [SEP] and padding (as transformers returns it).
    pub special_tokens_mask: Vec<u32>,
    /// L_r: the number of real (non-pad) model-side tokens, ≤ 256.
    pub num_real: usize,
    /// The caption tokenized without truncation or padding (positive-map indices refer to it).
    pub untruncated_ids: Vec<u32>,
    /// Token strings of the untruncated tokenization.
    pub tokens: Vec<String>,
    /// Character offsets [start, end) of each untruncated token ((0, 0) for specials).
    pub offsets: Vec<(usize, usize)>,
    /// Per phrase (same order as `prompt.phrases`): the token indices of its label, following
    /// the prompt's [`PromptPath`] (see there).
    pub label_to_tokens: Vec<Vec<usize>>,
}

impl EncodedPrompt {
    pub fn num_labels(&self) -> usize {
        self.prompt.phrases.len()
    }
    /// The 1-based (global) label id of each row.
    pub fn labels(&self) -> Vec<u32> {
        self.prompt.labels()
    }
    /// The model-side ids without padding: length L_r (glip-rt runs real tokens only).
    pub fn real_ids(&self) -> &[u32] {
        &self.input_ids[..self.num_real]
    }
    /// Whether the caption was cut to 256 tokens (labels past the cut lose tokens).
    pub fn truncated(&self) -> bool {
        self.untruncated_ids.len() > MAX_QUERY_LEN
    }
    /// [num_labels, 256] row-major: 1 where a label's token list has the token (< 256 only).
    pub fn positive_map_binary(&self) -> Vec<u8> {
        let mut m = vec![0u8; self.num_labels() * MAX_QUERY_LEN];
        for (r, toks) in self.label_to_tokens.iter().enumerate() {
            for &t in toks.iter().filter(|&&t| t < MAX_QUERY_LEN) {
                m[r * MAX_QUERY_LEN + t] = 1;
            }
        }
        m
    }
    /// `create_positive_map`'s output: the binary map, each row divided by (row sum + 1e-6)
    /// in f32 as torch computes it.
    pub fn positive_map_normalized(&self) -> Vec<f32> {
        let b = self.positive_map_binary();
        let mut out = vec![0f32; b.len()];
        for (orow, brow) in out
            .chunks_exact_mut(MAX_QUERY_LEN)
            .zip(b.chunks_exact(MAX_QUERY_LEN))
        {
            let sum: f32 = brow.iter().map(|&x| x as f32).sum();
            let den = sum + 1e-6f32;
            for (o, &x) in orow.iter_mut().zip(brow) {
                *o = x as f32 / den;
            }
        }
        out
    }
    /// The token indices the model's scores can use for each label: those < L_r, sorted,
    /// unique. Empty for a label whose name was cut off by truncation (it cannot be detected;
    /// GLIP's eval path would index past the logits there, its demo path yields NaN scores).
    pub fn model_label_to_tokens(&self) -> Vec<Vec<usize>> {
        self.label_to_tokens
            .iter()
            .map(|t| {
                let mut v: Vec<usize> = t.iter().copied().filter(|&i| i < self.num_real).collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect()
    }
    /// GLIP's positive_map_label_to_token as post-processing reads it: (label, the tokens the
    /// model sees), one entry per phrase.
    pub fn positive_map(&self) -> Vec<(u32, Vec<usize>)> {
        self.labels()
            .into_iter()
            .zip(self.model_label_to_tokens())
            .collect()
    }
    /// Labels (1-based ids) that have no token the model sees.
    pub fn labels_without_tokens(&self) -> Vec<u32> {
        self.model_label_to_tokens()
            .iter()
            .zip(&self.prompt.phrases)
            .filter(|(t, _)| t.is_empty())
            .map(|(_, p)| p.label)
            .collect()
    }
}

/// The WordPiece tokenizer with GLIP's settings.
#[derive(Clone)]
pub struct GlipTokenizer {
    /// No truncation, no padding: the positive-map tokenization.
    plain: Tokenizer,
    /// Truncation and padding to 256: the model-side tokenization.
    model_side: Tokenizer,
}

impl GlipTokenizer {
    /// The embedded bert-base-uncased tokenizer.
    pub fn bert_base_uncased() -> Result<Self> {
        Self::from_bytes(
            DEFAULT_TOKENIZER_JSON,
            "embedded bert-base-uncased tokenizer.json",
        )
    }

    /// A HuggingFace tokenizer.json file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes =
            crate::limits::read_file(path, crate::limits::MAX_TEXT_FILE_BYTES, "tokenizer")?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The default tokenizer, or the tokenizer.json at `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(p) => Self::from_file(p),
            None => Self::bert_base_uncased(),
        }
    }

    /// A tokenizer.json's bytes; `what` names it in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let mut plain = Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("{what}: not a valid tokenizer.json: {e}")))?;
        // The shipped file carries MiniLM's truncation/padding at 128; GLIP applies its own.
        plain
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(format!("{what}: cannot disable truncation: {e}")))?;
        plain.with_padding(None);
        let mut model_side = plain.clone();
        model_side
            .with_truncation(Some(TruncationParams {
                max_length: MAX_QUERY_LEN,
                ..TruncationParams::default()
            }))
            .map_err(|e| {
                Error::Tokenizer(format!(
                    "{what}: cannot set truncation to {MAX_QUERY_LEN}: {e}"
                ))
            })?;
        let pad_id = plain.token_to_id("[PAD]").unwrap_or(0);
        model_side.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(MAX_QUERY_LEN),
            pad_id,
            pad_token: "[PAD]".into(),
            ..PaddingParams::default()
        }));
        Ok(GlipTokenizer { plain, model_side })
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.plain.id_to_token(id)
    }

    /// Number of tokens (with [CLS] and [SEP]) of `text` without truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self
            .plain
            .encode_char_offsets(text, true)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize {text:?}: {e}")))?
            .len())
    }

    /// Tokenize a prompt and build its positive map.
    pub fn encode(&self, prompt: &Prompt) -> Result<EncodedPrompt> {
        let cap = prompt.caption.as_str();
        let enc = self
            .plain
            .encode_char_offsets(cap, true)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize {cap:?}: {e}")))?;
        let ms = self
            .model_side
            .encode_char_offsets(cap, true)
            .map_err(|e| {
                Error::Tokenizer(format!("cannot tokenize {cap:?} (256-token form): {e}"))
            })?;
        if ms.get_ids().len() != MAX_QUERY_LEN {
            return Err(Error::Tokenizer(format!(
                "model-side encoding has {} tokens, expected {MAX_QUERY_LEN}",
                ms.get_ids().len()
            )));
        }
        let num_real = ms.get_attention_mask().iter().filter(|&&m| m != 0).count();
        let char_to_token = |c: usize| enc.char_to_token(c, 0);
        let mut label_to_tokens = Vec::with_capacity(prompt.phrases.len());
        for p in &prompt.phrases {
            let mut toks = Vec::new();
            for &(beg, end) in &p.spans {
                let Some((b, e)) = span_to_tokens(&char_to_token, beg, end) else {
                    continue;
                };
                toks.extend(b..=e);
            }
            if prompt.path == PromptPath::Demo {
                // create_positive_map fills a 256-wide row; its non-zero columns are the tokens.
                toks.retain(|&t| t < MAX_QUERY_LEN);
                toks.sort_unstable();
                toks.dedup();
            }
            label_to_tokens.push(toks);
        }
        Ok(EncodedPrompt {
            prompt: prompt.clone(),
            input_ids: ms.get_ids().to_vec(),
            attention_mask: ms.get_attention_mask().to_vec(),
            special_tokens_mask: ms.get_special_tokens_mask().to_vec(),
            num_real,
            untruncated_ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
            label_to_tokens,
        })
    }
}

/// GLIP's span → inclusive token range rule (`create_positive_dict`). A negative probe index
/// (end < 3) is out of range: None, as Python's try/except around the fallbacks yields.
fn span_to_tokens(
    c2t: &dyn Fn(usize) -> Option<usize>,
    beg: usize,
    end: usize,
) -> Option<(usize, usize)> {
    let at = |i: Option<usize>| i.and_then(c2t);
    let b = at(Some(beg))
        .or_else(|| at(Some(beg + 1)))
        .or_else(|| at(Some(beg + 2)))?;
    let e = at(end.checked_sub(1))
        .or_else(|| at(end.checked_sub(2)))
        .or_else(|| at(end.checked_sub(3)))?;
    Some((b, e))
}

/// One prompt of a chunked label set.
pub type Chunk = Prompt;

/// GLIP's chunked evaluation (`TEST.CHUNKED_EVALUATION = n`): labels 1..=names.len() cut into
/// consecutive groups of `n` (the last one shorter), one evaluation prompt per group; each
/// phrase keeps its global label id, so detections of all chunks can be concatenated as GLIP
/// does (`concate_box_list`, no NMS across chunks). A chunk may still exceed 256 tokens.
pub fn chunk_by_count<S: AsRef<str>>(names: &[S], n: usize) -> Result<Vec<Chunk>> {
    if n == 0 {
        return Err(Error::Prompt("chunk size must be at least 1".into()));
    }
    if names.is_empty() {
        return Err(Error::Prompt("no class names given".into()));
    }
    let labels: Vec<u32> = (1..=names.len() as u32).collect();
    labels
        .chunks(n)
        .zip(names.chunks(n))
        .map(|(l, s)| Prompt::from_labeled_class_names(l, s))
        .collect()
}

/// Evaluation prompts for labels 1..=names.len(), each as many consecutive names as fit in
/// `max_tokens` tokens ([CLS] and [SEP] included; ≤ 256), so that nothing is truncated.
/// Global label ids are kept. A single name longer than `max_tokens` is an error.
pub fn chunk_to_fit<S: AsRef<str>>(
    tok: &GlipTokenizer,
    names: &[S],
    max_tokens: usize,
) -> Result<Vec<Chunk>> {
    if names.is_empty() {
        return Err(Error::Prompt("no class names given".into()));
    }
    if !(3..=MAX_QUERY_LEN).contains(&max_tokens) {
        return Err(Error::Prompt(format!(
            "max_tokens {max_tokens} must be in 3..={MAX_QUERY_LEN}"
        )));
    }
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < names.len() {
        // Grow greedily; re-tokenize the whole chunk because token counts need not add up
        // exactly for an arbitrary tokenizer.
        let mut end = start + 1;
        let mut best: Option<Prompt> = None;
        while end <= names.len() {
            let labels: Vec<u32> = (start as u32 + 1..=end as u32).collect();
            let p = Prompt::from_labeled_class_names(&labels, &names[start..end])?;
            if tok.count_tokens(&p.caption)? > max_tokens {
                break;
            }
            best = Some(p);
            end += 1;
        }
        let Some(p) = best else {
            return Err(Error::Prompt(format!(
                "class name {:?} alone needs more than {max_tokens} tokens",
                names[start].as_ref()
            )));
        };
        start += p.phrases.len();
        out.push(p);
    }
    Ok(out)
}
