//! Part-of-speech tags (Penn Treebank) from Pattern's English tagger: Brill's rule-based
//! tagger (lexicon, then lexical rules for unknown words, then contextual rules, then named
//! entities), with the data TextBlob 0.20.1 ships (`textblob/en/en-*.txt`, from PyPI; see
//! `assets/pattern-en/README.md`). It follows TextBlob's `_text.find_tags` given the
//! lexicon's morphology, context and entities, as Pattern's own parser calls it, quirks
//! included: a contextual rule is chosen by the tag a word had before the rules of its
//! position ran, and the last rule that fires wins.
//!
//! GLIP's demo tags with NLTK's averaged perceptron, whose weights are NLTK data that no
//! package ships; `tests/testdata/phrases/` measures how far the two agree on noun phrases.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use onig::{Regex, RegexOptions, Syntax};

/// `en-lexicon.txt` gzipped (`gzip -9n`), unpacked once when the tagger is first used.
const LEXICON_GZ: &[u8] = include_bytes!("../../assets/pattern-en/en-lexicon.txt.gz");
const MORPHOLOGY: &str = include_str!("../../assets/pattern-en/en-morphology.txt");
const CONTEXT: &str = include_str!("../../assets/pattern-en/en-context.txt");
const ENTITIES: &str = include_str!("../../assets/pattern-en/en-entities.txt");

/// Tags of words the lexicon does not know (Pattern's `default`): a noun, a proper noun
/// (capitalised words), a number.
const DEFAULT_NN: &str = "NN";
const DEFAULT_NNP: &str = "NNP";
const DEFAULT_CD: &str = "CD";
/// The delimiter around a sentence the contextual rules look through.
const STAART: &str = "STAART";

#[derive(Clone, Copy, Debug, PartialEq)]
enum MorphCmd {
    Char,
    HasPref,
    HasSuf,
    AddPref,
    AddSuf,
    DeletePref,
    DeleteSuf,
    GoodLeft,
    GoodRight,
}

impl MorphCmd {
    fn parse(s: &str) -> Option<MorphCmd> {
        Some(match s {
            "char" => MorphCmd::Char,
            "haspref" => MorphCmd::HasPref,
            "hassuf" => MorphCmd::HasSuf,
            "addpref" => MorphCmd::AddPref,
            "addsuf" => MorphCmd::AddSuf,
            "deletepref" => MorphCmd::DeletePref,
            "deletesuf" => MorphCmd::DeleteSuf,
            "goodleft" => MorphCmd::GoodLeft,
            "goodright" => MorphCmd::GoodRight,
            _ => return None,
        })
    }
}

/// `ly hassuf 2 RB x` (any unknown word) or `NN s fhassuf 1 NNS x` (only one tagged NN).
struct MorphRule {
    only_if: Option<&'static str>,
    x: &'static str,
    /// None: a command Pattern accepts but never tests.
    cmd: Option<MorphCmd>,
    tag: &'static str,
}

/// `VBD VB PREVTAG TO`: a word tagged `from` (`*`: any) becomes `to` when `cmd(x, y)` holds.
struct ContextRule {
    from: &'static str,
    to: &'static str,
    cmd: String,
    x: &'static str,
    y: &'static str,
}

pub struct Tagger {
    lexicon: HashMap<String, String>,
    morphology: Vec<MorphRule>,
    context: Vec<ContextRule>,
    /// First word (lower case) → the entities starting with it, in file order; each is its
    /// words and a tag suffix ("-PERS", "-LOC", "-ORG" or "").
    entities: HashMap<String, Vec<(Vec<String>, String)>>,
    url: Regex,
    domain: Regex,
    email: Regex,
}

/// The lines of a Pattern data file: trimmed, without blank lines and `;;;` comments.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(";;;"))
}

fn python_regex(pattern: &str) -> Result<Regex, String> {
    Regex::with_options(pattern, RegexOptions::REGEX_OPTION_NONE, Syntax::python())
        .map_err(|e| format!("tagger pattern {pattern:?}: {e}"))
}

impl Tagger {
    /// The tagger over the embedded data, parsed once.
    pub fn english() -> Result<&'static Tagger, String> {
        static TAGGER: OnceLock<Result<Tagger, String>> = OnceLock::new();
        TAGGER
            .get_or_init(Tagger::load)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn load() -> Result<Tagger, String> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(LEXICON_GZ)
            .read_to_string(&mut text)
            .map_err(|e| format!("en-lexicon.txt.gz: {e}"))?;
        let mut lexicon = HashMap::with_capacity(100_000);
        for (n, line) in lines(&text).enumerate() {
            let mut f = line.split(' ');
            match (f.next(), f.next()) {
                (Some(word), Some(tag)) => {
                    lexicon.insert(word.to_string(), tag.to_string());
                }
                _ => return Err(format!("en-lexicon.txt entry {n}: {line:?} has no tag")),
            }
        }
        let mut morphology = Vec::new();
        for line in lines(MORPHOLOGY) {
            let r: Vec<&'static str> = line.split_whitespace().collect();
            let bad = || format!("en-morphology.txt: rule {line:?} not understood");
            if r.len() < 4 {
                return Err(bad());
            }
            let tag = r[r.len() - 2];
            // As Pattern reads a rule: a command in the third field makes it an "only if
            // tagged" rule (its leading f's dropped), else one in the second field a plain
            // one (taken as written: a plain rule spelt "fhassuf" never fires).
            let is_cmd = |s: &str| MorphCmd::parse(s.strip_prefix('f').unwrap_or(s)).is_some();
            let rule = if is_cmd(r[2]) {
                MorphRule {
                    only_if: Some(r[0]),
                    x: r[1],
                    cmd: MorphCmd::parse(r[2].to_lowercase().trim_start_matches('f')),
                    tag,
                }
            } else if is_cmd(r[1]) {
                MorphRule {
                    only_if: None,
                    x: r[0],
                    cmd: MorphCmd::parse(&r[1].to_lowercase()),
                    tag,
                }
            } else {
                return Err(bad());
            };
            morphology.push(rule);
        }
        let mut context = Vec::new();
        for line in lines(CONTEXT) {
            let r: Vec<&'static str> = line.split_whitespace().collect();
            if r.len() < 4 {
                return Err(format!("en-context.txt: rule {line:?} not understood"));
            }
            context.push(ContextRule {
                from: r[0],
                to: r[1],
                cmd: r[2].to_lowercase(),
                x: r[3],
                y: r.get(4).copied().unwrap_or(""),
            });
        }
        let mut entities: HashMap<String, Vec<(Vec<String>, String)>> = HashMap::new();
        for line in lines(ENTITIES) {
            let mut words: Vec<String> = line.split_whitespace().map(str::to_lowercase).collect();
            let suffix = match words.last().map(String::as_str) {
                Some("pers" | "loc" | "org") => {
                    let label = words.pop().unwrap_or_default();
                    format!("-{}", label.to_uppercase())
                }
                _ => String::new(),
            };
            if let Some(first) = words.first().cloned() {
                entities.entry(first).or_default().push((words, suffix));
            }
        }
        Ok(Tagger {
            lexicon,
            morphology,
            context,
            entities,
            url: python_regex(r"^http://")?,
            // Pattern's own expression, its character class included ("[com|org|…]").
            domain: python_regex(r"^www\..*?\.[com|org|net|edu|de|uk]$")?,
            email: python_regex(r"^[\w\-\.\+]+@(\w[\w\-]+\.)+[\w\-]+$")?,
        })
    }

    /// The Penn Treebank tag of every token.
    pub fn tag(&self, tokens: &[String]) -> Vec<String> {
        // Known words.
        let known: Vec<Option<&str>> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.lexicon
                    .get(t.as_str())
                    .map(String::as_str)
                    .or_else(|| {
                        (i == 0)
                            .then(|| self.lexicon.get(&t.to_lowercase()).map(String::as_str))
                            .flatten()
                    })
            })
            .collect();
        // Unknown words, left to right (a rule may look at the word before, already tagged).
        let mut tags: Vec<String> = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            let tag = match known[i] {
                Some(t) => t.to_string(),
                None if is_title(token) => DEFAULT_NNP.to_string(),
                None if is_number(token) => DEFAULT_CD.to_string(),
                None => {
                    let prev = i.checked_sub(1).map(|p| tokens[p].as_str());
                    let next = tokens.get(i + 1).map(String::as_str);
                    self.morphology(token, prev, next)
                }
            };
            tags.push(tag);
        }
        self.context(tokens, &mut tags);
        self.entities(tokens, &mut tags);
        tags
    }

    fn morphology(&self, w: &str, prev: Option<&str>, next: Option<&str>) -> String {
        let mut tag = DEFAULT_NN;
        for r in &self.morphology {
            if r.only_if.is_some_and(|t| t != tag) {
                continue;
            }
            let x = r.x;
            let Some(cmd) = r.cmd else { continue };
            let fires = match cmd {
                MorphCmd::Char => w.contains(x),
                MorphCmd::HasPref => w.starts_with(x),
                MorphCmd::HasSuf => w.ends_with(x),
                MorphCmd::AddPref => self.lexicon.contains_key(&format!("{x}{w}")),
                MorphCmd::AddSuf => self.lexicon.contains_key(&format!("{w}{x}")),
                MorphCmd::DeletePref => w
                    .strip_prefix(x)
                    .is_some_and(|rest| self.lexicon.contains_key(rest)),
                MorphCmd::DeleteSuf => w
                    .strip_suffix(x)
                    .is_some_and(|rest| self.lexicon.contains_key(rest)),
                MorphCmd::GoodLeft => next == Some(x),
                MorphCmd::GoodRight => prev == Some(x),
            };
            if fires {
                tag = r.tag;
            }
        }
        tag.to_string()
    }

    fn context(&self, tokens: &[String], tags: &mut [String]) {
        let n = tokens.len();
        // Words and tags with three delimiters each side, as Pattern pads them.
        let word = |k: isize| -> &str {
            usize::try_from(k)
                .ok()
                .and_then(|k| tokens.get(k))
                .map_or(STAART, String::as_str)
        };
        for i in 0..n {
            let before = tags[i].clone();
            let k = i as isize;
            for r in &self.context {
                if before != r.from && r.from != "*" {
                    continue;
                }
                let tag = |d: isize| -> &str {
                    usize::try_from(k + d)
                        .ok()
                        .and_then(|p| tags.get(p))
                        .map_or(STAART, String::as_str)
                };
                let (x, y) = (r.x, r.y);
                let fires = match r.cmd.as_str() {
                    "prevtag" => x == tag(-1),
                    "nexttag" => x == tag(1),
                    "prev2tag" => x == tag(-2),
                    "next2tag" => x == tag(2),
                    "prev1or2tag" => x == tag(-1) || x == tag(-2),
                    "next1or2tag" => x == tag(1) || x == tag(2),
                    "prev1or2or3tag" => x == tag(-1) || x == tag(-2) || x == tag(-3),
                    "next1or2or3tag" => x == tag(1) || x == tag(2) || x == tag(3),
                    "surroundtag" => x == tag(-1) && y == tag(1),
                    "curwd" => x == word(k),
                    "prevwd" => x == word(k - 1),
                    "nextwd" => x == word(k + 1),
                    "prev1or2wd" => x == word(k - 1) || x == word(k - 2),
                    "next1or2wd" => x == word(k + 1) || x == word(k + 2),
                    "prevwdtag" => x == word(k - 1) && y == tag(-1),
                    "nextwdtag" => x == word(k + 1) && y == tag(1),
                    "wdprevtag" => x == tag(-1) && y == word(k),
                    "wdnexttag" => x == word(k) && y == tag(1),
                    "wdand2aft" => x == word(k) && y == word(k + 2),
                    "wdand2tagbfr" => x == tag(-2) && y == word(k),
                    "wdand2tagaft" => x == word(k) && y == tag(2),
                    "lbigram" => x == word(k - 1) && y == word(k),
                    "rbigram" => x == word(k) && y == word(k + 1),
                    "prevbigram" => x == tag(-2) && y == tag(-1),
                    "nextbigram" => x == tag(1) && y == tag(2),
                    // Pattern lists "next1or2or3wd" and "prev1or2or3wd" but never tests them.
                    _ => false,
                };
                if fires {
                    tags[i] = r.to.to_string();
                }
            }
        }
    }

    fn entities(&self, tokens: &[String], tags: &mut [String]) {
        let mut i = 0;
        while i < tokens.len() {
            let w = tokens[i].to_lowercase();
            if self.url.find(&w).is_some()
                || self.domain.find(&w).is_some()
                || self.email.find(&w).is_some()
            {
                tags[i] = DEFAULT_NNP.to_string();
            }
            if let Some(candidates) = self.entities.get(&w) {
                for (words, suffix) in candidates {
                    let matched = words
                        .iter()
                        .enumerate()
                        .all(|(j, e)| tokens.get(i + j).is_some_and(|t| t.to_lowercase() == *e));
                    if matched {
                        for t in &mut tags[i..i + words.len()] {
                            let base = if t == "NNPS" { "NNPS" } else { DEFAULT_NNP };
                            *t = format!("{base}{suffix}");
                        }
                        i += words.len() - 1;
                        break;
                    }
                }
            }
            i += 1;
        }
    }
}

/// Python's `str.istitle`: some cased letter, every upper-case one after an uncased
/// character, every lower-case one after a cased one.
fn is_title(s: &str) -> bool {
    let (mut cased, mut after_cased) = (false, false);
    for c in s.chars() {
        if c.is_uppercase() {
            if after_cased {
                return false;
            }
            (cased, after_cased) = (true, true);
        } else if c.is_lowercase() {
            if !after_cased {
                return false;
            }
            (cased, after_cased) = (true, true);
        } else {
            after_cased = false;
        }
    }
    cased
}

/// Pattern's `CD` expression: digits and the marks numbers are written with.
fn is_number(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || "-,.:/%$".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Vec<String> {
        let tokens: Vec<String> = s.split(' ').map(str::to_string).collect();
        Tagger::english().unwrap().tag(&tokens)
    }

    #[test]
    fn data_parses_whole() {
        let t = Tagger::english().unwrap();
        assert!(t.lexicon.len() > 90_000, "{}", t.lexicon.len());
        assert_eq!(t.morphology.len(), lines(MORPHOLOGY).count());
        assert_eq!(t.context.len(), lines(CONTEXT).count());
    }

    #[test]
    fn known_unknown_and_entities() {
        assert_eq!(
            tag("the cat sat on the mat"),
            ["DT", "NN", "VBD", "IN", "DT", "NN"]
        );
        // Unknown words: suffix rules and numbers.
        assert_eq!(tag("glorbly")[0], "RB");
        assert_eq!(tag("3/4")[0], "CD");
        assert_eq!(tag("Zqx")[0], "NNP");
        // A named entity of two words.
        assert_eq!(tag("abraham lincoln"), ["NNP-PERS", "NNP-PERS"]);
    }

    #[test]
    fn python_istitle() {
        assert!(is_title("Hello"));
        assert!(is_title("Hello World"));
        assert!(!is_title("HeLLo"));
        assert!(!is_title("hello"));
        assert!(!is_title("123"));
        assert!(is_title("A1"));
    }
}
