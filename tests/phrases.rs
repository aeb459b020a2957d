//! `--phrases auto` against tests/testdata/phrases/fixtures.json (made by
//! scripts/make_phrase_fixtures.py): on every caption, the word tokens equal NLTK's, the tags
//! equal Pattern's tagger (TextBlob 0.20.1) and the entities equal what GLIP's `run_ner` makes
//! of them; and the phrases' agreement with an independent tagger (wink-pos-tagger) is
//! measured and held to its recorded level.

use std::collections::HashMap;

use glip_rt::phrases::{self, brill::Tagger, word_tokenize::word_tokenize};

#[derive(serde::Deserialize)]
struct Case {
    caption: String,
    tokens: Vec<String>,
    pattern_tags: Vec<String>,
    pattern_phrases: Vec<String>,
    pattern_entities: Vec<(String, usize, usize)>,
    wink_phrases: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Fixtures {
    cases: Vec<Case>,
}

fn fixtures() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/phrases/fixtures.json"
    );
    let text = std::fs::read_to_string(path).expect("fixtures.json");
    let f: Fixtures = serde_json::from_str(&text).expect("fixtures.json parses");
    assert!(f.cases.len() >= 50, "{} captions", f.cases.len());
    f.cases
}

#[test]
fn tokens_tags_phrases_and_entities_equal_the_reference() {
    let tagger = Tagger::english().unwrap();
    for c in fixtures() {
        let tokens = word_tokenize(&c.caption.to_lowercase()).unwrap();
        assert_eq!(tokens, c.tokens, "tokens of {:?}", c.caption);
        assert_eq!(
            tagger.tag(&tokens),
            c.pattern_tags,
            "tags of {:?}",
            c.caption
        );
        assert_eq!(
            phrases::noun_phrases(&c.caption).unwrap(),
            c.pattern_phrases,
            "phrases of {:?}",
            c.caption
        );
        let prompt = phrases::auto_prompt(&c.caption).unwrap();
        let got: Vec<(String, usize, usize)> = prompt
            .phrases
            .iter()
            .map(|p| (p.name.clone(), p.spans[0].0, p.spans[0].1))
            .collect();
        assert_eq!(got, c.pattern_entities, "entities of {:?}", c.caption);
    }
}

/// Precision, recall and F1 of one list of phrases against another, counting repeats.
fn agreement(got: &[String], want: &[String]) -> (usize, usize, usize) {
    let mut left: HashMap<&str, usize> = HashMap::new();
    for w in want {
        *left.entry(w).or_default() += 1;
    }
    let mut hits = 0;
    for g in got {
        if let Some(n) = left.get_mut(g.as_str()).filter(|n| **n > 0) {
            *n -= 1;
            hits += 1;
        }
    }
    (hits, got.len(), want.len())
}

/// The level README.md in tests/testdata/phrases states; a tagger change that loses phrases
/// fails here.
const MIN_F1_VS_WINK: f64 = 0.95;

#[test]
fn phrases_agree_with_an_independent_tagger() {
    let (mut hits, mut got_n, mut want_n, mut same) = (0, 0, 0, 0);
    let cases = fixtures();
    for c in &cases {
        let got = phrases::noun_phrases(&c.caption).unwrap();
        let (h, g, w) = agreement(&got, &c.wink_phrases);
        (hits, got_n, want_n) = (hits + h, got_n + g, want_n + w);
        if got == c.wink_phrases {
            same += 1;
        } else {
            eprintln!("{:?}: {got:?} vs wink {:?}", c.caption, c.wink_phrases);
        }
    }
    let (p, r) = (hits as f64 / got_n as f64, hits as f64 / want_n as f64);
    let f1 = 2.0 * p * r / (p + r);
    eprintln!(
        "{} captions: {same} with the same phrases; precision {p:.3}, recall {r:.3}, F1 {f1:.3}",
        cases.len()
    );
    assert!(f1 >= MIN_F1_VS_WINK, "F1 {f1:.3} < {MIN_F1_VS_WINK}");
}
