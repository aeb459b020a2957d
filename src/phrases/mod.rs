//! `--phrases auto`: the noun phrases of a free caption, found as GLIP's demo finds them
//! (`predictor_glip.py:107-127,461-484`, glip-t-inference-spec.md §4 "Demo path"): the caption
//! in lower case is cut into word tokens (`nltk.word_tokenize`), tagged (Penn Treebank tags),
//! chunked by the rule `NP: {<DT>?<JJ.*>*<NN.*>+}`; each chunk's words joined by spaces lose
//! GLIP's punctuation marks, and every occurrence of each remaining phrase in the lower-case
//! caption becomes one entity of its own (label j+1 for the j-th occurrence found).
//!
//! The tagger is Pattern's Brill tagger ([`brill`]), not NLTK's averaged perceptron (whose
//! weights no package ships); `tests/testdata/phrases/README.md` states how often the phrases
//! agree with another tagger's.

pub mod brill;
pub mod word_tokenize;

use crate::error::{Error, Result};
use crate::limits::{MAX_AUTO_CAPTION_CHARS, MAX_AUTO_ENTITIES};
use crate::tokenizer::{Phrase, Prompt, PromptPath};

/// The characters GLIP's `remove_punctuation` deletes from a phrase.
const GLIP_PUNCTUATION: &[char] = &[
    '|', ':', ';', '@', '(', ')', '[', ']', '{', '}', '^', '\'', '"', '’', '`', '?', '$', '%', '#',
    '!', '&', '*', '+', ',', '.',
];

/// The spans (token ranges, end exclusive) the rule `<DT>?<JJ.*>*<NN.*>+` chunks, leftmost
/// first and as long as they go, as NLTK's RegexpParser finds them.
pub fn noun_phrase_spans(tags: &[String]) -> Vec<(usize, usize)> {
    let is = |i: usize, f: &dyn Fn(&str) -> bool| tags.get(i).is_some_and(|t| f(t));
    let (dt, jj, nn) = (
        |t: &str| t == "DT",
        |t: &str| t.starts_with("JJ"),
        |t: &str| t.starts_with("NN"),
    );
    let mut out = Vec::new();
    let mut i = 0;
    while i < tags.len() {
        let mut j = i;
        if is(j, &dt) {
            j += 1;
        }
        while is(j, &jj) {
            j += 1;
        }
        let nouns = j;
        while is(j, &nn) {
            j += 1;
        }
        if j > nouns {
            out.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// GLIP's `find_noun_phrases` then `remove_punctuation`: the noun phrases of the caption in
/// order (repeats kept), each as its lower-case words joined by single spaces.
pub fn noun_phrases(caption: &str) -> Result<Vec<String>> {
    let tokens = word_tokenize::word_tokenize(&caption.to_lowercase()).map_err(Error::Prompt)?;
    let tags = brill::Tagger::english()
        .map_err(Error::Prompt)?
        .tag(&tokens);
    Ok(noun_phrase_spans(&tags)
        .into_iter()
        .map(|(a, b)| tokens[a..b].join(" "))
        .map(|p| p.replace(GLIP_PUNCTUATION, "").trim().to_string())
        .filter(|p| !p.is_empty())
        .collect())
}

/// Every non-overlapping occurrence of `needle` in `hay`, left to right, as char spans.
fn occurrences(hay: &[char], needle: &[char]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut s = 0;
    while !needle.is_empty() && s + needle.len() <= hay.len() {
        if hay[s..s + needle.len()] == *needle {
            out.push((s, s + needle.len()));
            s += needle.len();
        } else {
            s += 1;
        }
    }
    out
}

/// The prompt GLIP's demo grounds for a free caption: one entity per occurrence of each noun
/// phrase in the lower-case caption (a phrase inside a longer word counts, as with GLIP's
/// `re.finditer`), named by its phrase.
///
/// GLIP matches each phrase as a regular expression; after its punctuation removal only a
/// backslash is special, and a phrase with one is left out here. When lower case changes
/// the caption's length in characters (a few non-ASCII letters), the lower-case caption is
/// the one grounded, so that the spans point at the text they were found in.
pub fn auto_prompt(caption: &str) -> Result<Prompt> {
    if caption.trim().is_empty() {
        return Err(Error::Prompt("the caption is empty".into()));
    }
    let n = caption.chars().count();
    if n > MAX_AUTO_CAPTION_CHARS {
        return Err(Error::Limit {
            what: "caption for --phrases auto".into(),
            msg: format!(
                "{n} characters; at most {MAX_AUTO_CAPTION_CHARS} are searched for phrases"
            ),
        });
    }
    let lower = caption.to_lowercase();
    let hay: Vec<char> = lower.chars().collect();
    let text = if hay.len() == caption.chars().count() {
        caption
    } else {
        lower.as_str()
    };
    let found = noun_phrases(caption)?;
    let mut entities = Vec::new();
    for phrase in found.iter().filter(|p| !p.contains('\\')) {
        let needle: Vec<char> = phrase.chars().collect();
        for span in occurrences(&hay, &needle) {
            if entities.len() == MAX_AUTO_ENTITIES {
                return Err(Error::Limit {
                    what: "caption for --phrases auto".into(),
                    msg: format!(
                        "its {} noun phrases occur more than {MAX_AUTO_ENTITIES} times in all \
                         (each occurrence is an entity, as in GLIP's demo); shorten it or name \
                         the phrases with --phrases",
                        found.len()
                    ),
                });
            }
            entities.push(Phrase {
                label: entities.len() as u32 + 1,
                name: phrase.clone(),
                spans: vec![span],
            });
        }
    }
    if entities.is_empty() {
        return Err(Error::Prompt(format!(
            "no noun phrase found in the caption {caption:?} (phrases tagged: {found:?}); \
             name the phrases with --phrases"
        )));
    }
    Prompt::from_phrases(text, entities, PromptPath::Demo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn chunk_rule() {
        assert_eq!(
            noun_phrase_spans(&tags("DT JJ NN VBZ IN DT NNS NN")),
            [(0, 3), (5, 8)]
        );
        // A determiner without a noun, adjectives without a noun: no chunk.
        assert_eq!(noun_phrase_spans(&tags("DT JJ VB JJ JJR")), []);
        // Two determiners: the chunk starts at the second.
        assert_eq!(noun_phrase_spans(&tags("DT DT NNP-PERS")), [(1, 3)]);
    }

    #[test]
    fn caption_to_entities() {
        let p = auto_prompt("A woman with a red umbrella walks past a man.").unwrap();
        let names: Vec<&str> = p.phrases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a woman", "a red umbrella", "a man"]);
        assert_eq!(p.phrases[2].spans, vec![(39, 44)]);
        assert_eq!(p.caption, "A woman with a red umbrella walks past a man.");
    }

    #[test]
    fn repeated_phrases_and_substrings_as_glip() {
        let spans = |caption: &str| -> Vec<(String, usize, usize)> {
            let p = auto_prompt(caption).unwrap();
            let labels: Vec<u32> = p.phrases.iter().map(|p| p.label).collect();
            assert_eq!(labels, (1..=p.phrases.len() as u32).collect::<Vec<_>>());
            p.phrases
                .iter()
                .map(|p| (p.name.clone(), p.spans[0].0, p.spans[0].1))
                .collect()
        };
        // "a dog" is chunked twice and occurs twice: four entities, as GLIP's run_ner.
        let s = |n: &str, a, b| (n.to_string(), a, b);
        assert_eq!(
            spans("A dog chases a dog near a hotdog stand."),
            [
                s("a dog", 0, 5),
                s("a dog", 13, 18),
                s("a dog", 0, 5),
                s("a dog", 13, 18),
                s("a hotdog stand", 24, 38)
            ]
        );
        // GLIP's re.finditer also finds "dogs" inside "hotdogs".
        assert_eq!(
            spans("dogs and hotdogs"),
            [s("dogs", 0, 4), s("dogs", 12, 16), s("hotdogs", 9, 16)]
        );
    }

    #[test]
    fn nothing_to_ground_is_an_error() {
        for caption in ["", "   ", "run quickly!", "..."] {
            let err = auto_prompt(caption).unwrap_err().to_string();
            assert!(err.contains("caption"), "{caption:?}: {err}");
        }
        let long = "a dog and a cat. ".repeat(MAX_AUTO_CAPTION_CHARS / 17 + 1);
        let err = auto_prompt(&long).unwrap_err().to_string();
        assert!(err.contains("at most 4096"), "{err}");
        // 12 × "a dog": 144 entities, accepted; 17 × "a dog": 289, refused.
        assert_eq!(
            auto_prompt(&"a dog. ".repeat(12)).unwrap().phrases.len(),
            144
        );
        let err = auto_prompt(&"a dog. ".repeat(17)).unwrap_err().to_string();
        assert!(err.contains("more than 256 times"), "{err}");
    }
}
