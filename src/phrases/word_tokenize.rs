//! Word tokens as GLIP's demo gets them from `nltk.word_tokenize`: the text is cut into
//! sentences, then each sentence goes through the rules of NLTK's Treebank-style word
//! tokenizer (`NLTKWordTokenizer`, nltk 3.10), applied in the same order.
//!
//! The rules are regular expressions with look-behind, look-ahead and possessive repeats,
//! which the `regex` crate has none of; they run on Oniguruma in its Python syntax (the
//! engine the BERT tokenizer already links), so each reads as NLTK's does.
//!
//! Sentences: NLTK cuts them with Punkt's trained English model, which is NLTK data, not in
//! any package. Here a sentence ends at `.`, `?` or `!` (with any closing quotes or brackets)
//! before white space, as Punkt does when it knows no abbreviation; the difference is that
//! GLIP's Punkt keeps abbreviations such as "mr." or "st." inside a sentence.

use std::sync::OnceLock;

use onig::{Captures, Regex, RegexOptions, Syntax};

/// One rewrite: every match of `re` becomes `template` (`\1`…`\9` for groups, `\g<0>` for
/// the whole match, as in Python's `re.sub`).
struct Rule {
    re: Regex,
    template: &'static str,
}

impl Rule {
    fn new(pattern: &str, template: &'static str) -> Result<Rule, String> {
        let re = Regex::with_options(pattern, RegexOptions::REGEX_OPTION_NONE, Syntax::python())
            .map_err(|e| format!("word tokenizer rule {pattern:?}: {e}"))?;
        Ok(Rule { re, template })
    }

    fn apply(&self, text: &str) -> String {
        let template = self.template;
        self.re
            .replace_all(text, |caps: &Captures| expand(template, caps))
    }
}

/// Python's `re.sub` template: `\N` and `\g<N>` are groups (an unmatched one is empty).
fn expand(template: &str, caps: &Captures) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let (group, used) = if let Some(g) = tail.strip_prefix("g<") {
            let close = g.find('>').unwrap_or(g.len());
            (g[..close].parse::<usize>().ok(), 2 + close + 1)
        } else {
            let digits = tail.chars().take_while(|c| c.is_ascii_digit()).count();
            (tail[..digits].parse::<usize>().ok(), digits)
        };
        match group {
            Some(g) => out.push_str(caps.at(g).unwrap_or("")),
            None => out.push('\\'),
        }
        rest = &tail[used.min(tail.len())..];
    }
    out.push_str(rest);
    out
}

struct Rules {
    starting_quotes: Vec<Rule>,
    punctuation: Vec<Rule>,
    parens_brackets: Rule,
    double_dashes: Rule,
    ending_quotes: Vec<Rule>,
    contractions: Vec<Rule>,
}

fn rules() -> Result<&'static Rules, String> {
    static RULES: OnceLock<Result<Rules, String>> = OnceLock::new();
    RULES
        .get_or_init(build_rules)
        .as_ref()
        .map_err(Clone::clone)
}

fn build_rules() -> Result<Rules, String> {
    Ok(Rules {
        starting_quotes: vec![
            Rule::new("([«“‘„]|[`]+)", r" \1 ")?,
            Rule::new(r#"^\""#, "``")?,
            Rule::new("(``)", r" \1 ")?,
            Rule::new(r#"([ \(\[{<])(\"|\'{2})"#, r"\1 `` ")?,
            Rule::new(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", r"\1 ")?,
        ],
        punctuation: vec![
            Rule::new(r#"([^\.])(\.)([\]\)}>"\'»”’ ]*+)\s*$"#, r"\1 \2 \3 ")?,
            Rule::new(r"([:,])([^\d])", r" \1 \2")?,
            Rule::new(r"([:,])$", r" \1 ")?,
            Rule::new(r"\.{2,}", r" \g<0> ")?,
            Rule::new(r"[;@#$%&]", r" \g<0> ")?,
            Rule::new("[\u{2012}-\u{2015}]", r" \g<0> ")?,
            Rule::new(r#"([^\.])(\.)([\]\)}>"\']*)\s*$"#, r"\1 \2\3 ")?,
            Rule::new(r"[?!]", r" \g<0> ")?,
            Rule::new(r"([^'])' ", r"\1 ' ")?,
            Rule::new(r"[*]", r" \g<0> ")?,
        ],
        parens_brackets: Rule::new(r"[\]\[\(\)\{\}\<\>]", r" \g<0> ")?,
        double_dashes: Rule::new("--", " -- ")?,
        ending_quotes: vec![
            Rule::new("([»”’])", r" \1 ")?,
            Rule::new("''", " '' ")?,
            Rule::new("\"", " '' ")?,
            Rule::new(r"\s+", " ")?,
            Rule::new(r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 ")?,
            Rule::new(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 ")?,
        ],
        // MacIntyre's contractions ("cannot" → "can not"); NLTK leaves its third list out.
        contractions: [
            r"(?i)\b(can)(not)\b",
            r"(?i)\b(d)('ye)\b",
            r"(?i)\b(gim)(me)\b",
            r"(?i)\b(gon)(na)\b",
            r"(?i)\b(got)(ta)\b",
            r"(?i)\b(lem)(me)\b",
            r"(?i)\b(more)('n)\b",
            r"(?i)\b(wan)(na)(?=\s)",
            r"(?i) ('t)(is)\b",
            r"(?i) ('t)(was)\b",
        ]
        .into_iter()
        .map(|p| Rule::new(p, r" \1 \2 "))
        .collect::<Result<_, _>>()?,
    })
}

/// The word tokens of one sentence (NLTK's `NLTKWordTokenizer.tokenize`).
pub fn tokenize_sentence(sentence: &str) -> Result<Vec<String>, String> {
    let r = rules()?;
    let mut text = sentence.to_string();
    for rule in r.starting_quotes.iter().chain(&r.punctuation) {
        text = rule.apply(&text);
    }
    text = r.parens_brackets.apply(&text);
    text = r.double_dashes.apply(&text);
    text = format!(" {text} ");
    for rule in r.ending_quotes.iter().chain(&r.contractions) {
        text = rule.apply(&text);
    }
    Ok(text.split_whitespace().map(str::to_string).collect())
}

/// The sentences of a text: each ends after `.`, `?` or `!` (a run of them, then any closing
/// quotes or brackets) that white space follows; the white space between them is dropped.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i].1, '.' | '?' | '!') {
            let mut j = i;
            while j + 1 < chars.len() && matches!(chars[j + 1].1, '.' | '?' | '!') {
                j += 1;
            }
            while j + 1 < chars.len() && matches!(chars[j + 1].1, '"' | '\'' | ')' | ']' | '}') {
                j += 1;
            }
            if j + 1 < chars.len() && chars[j + 1].1.is_whitespace() {
                let end = chars[j + 1].0;
                let piece = text[start..end].trim();
                if !piece.is_empty() {
                    out.push(piece);
                }
                start = end;
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    let piece = text[start..].trim();
    if !piece.is_empty() {
        out.push(piece);
    }
    out
}

/// `nltk.word_tokenize`: the word tokens of every sentence, in order.
pub fn word_tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for sentence in sentences(text) {
        out.extend(tokenize_sentence(sentence)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles() {
        let r = rules().unwrap();
        assert_eq!(r.contractions.len(), 10);
    }

    /// NLTK's own doctest of `NLTKWordTokenizer.tokenize` (one sentence at a time here).
    #[test]
    fn nltk_doctest() {
        let s = "Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.  Please buy me\ntwo of them.\nThanks.";
        assert_eq!(
            tokenize_sentence(s).unwrap(),
            [
                "Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36", "euros", ")", "in",
                "New", "York.", "Please", "buy", "me", "two", "of", "them.", "Thanks", "."
            ]
        );
        assert_eq!(
            word_tokenize(s).unwrap(),
            [
                "Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36", "euros", ")", "in",
                "New", "York", ".", "Please", "buy", "me", "two", "of", "them", ".", "Thanks", "."
            ]
        );
    }

    #[test]
    fn quotes_contractions_and_dashes() {
        assert_eq!(
            word_tokenize("\"a dog's ball\" -- i can't, he said; we're gonna go...").unwrap(),
            [
                "``", "a", "dog", "'s", "ball", "''", "--", "i", "ca", "n't", ",", "he", "said",
                ";", "we", "'re", "gon", "na", "go", "..."
            ]
        );
    }

    #[test]
    fn template_expansion() {
        let re = Regex::new("(a)(b)?").unwrap();
        let caps = re.captures("a").unwrap();
        assert_eq!(expand(r"<\1|\2|\g<0>>", &caps), "<a||a>");
    }
}
