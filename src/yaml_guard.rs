//! A linear pre-scan of yaml text that refuses deep nesting before the yaml parser sees it.
//!
//! libyaml (under serde_yaml) takes time quadratic in the nesting of flow collections
//! (`[[[[…`): a 200 KB file nested 100k deep took 40 s to be refused. This scan bounds an
//! over-estimate of the nesting depth in one pass, so such a file is refused in
//! milliseconds; real GLIP configs nest fewer than 6 deep and pass untouched.

use crate::error::{Error, Result};
use crate::limits::MAX_NESTING;

/// Refuses `text` if its nesting may exceed [`MAX_NESTING`]. The estimate per line is the
/// number of open block indentation levels, plus the `- ` sequence entries that open on the
/// line (`- - - x`), plus the open flow brackets; quoted text and comments are skipped.
pub fn check_nesting(text: &str, what: &str) -> Result<()> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut deepest = 0usize;
    for (lineno, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        // Block levels only count outside flow collections (inside, lines are free-form).
        let mut depth = flow;
        if flow == 0 {
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last().is_none_or(|&i| i < indent) {
                indents.push(indent);
            }
            let dashes = body
                .as_bytes()
                .chunks(2)
                .take_while(|c| c == b"- " || c == b"-")
                .count();
            depth += indents.len() + dashes;
        }
        let mut quote: Option<u8> = None;
        let mut prev = b' ';
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            match quote {
                Some(b'"') if c == b'\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    b'#' if prev == b' ' || prev == b'\t' => break,
                    b'"' | b'\'' if matches!(prev, b' ' | b'[' | b'{' | b',' | b':') => {
                        quote = Some(c)
                    }
                    b'[' | b'{' => {
                        flow += 1;
                        depth += 1;
                    }
                    b']' | b'}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            deepest = deepest.max(depth);
            if deepest > MAX_NESTING {
                return Err(Error::Config(format!(
                    "{what}: line {}: nested deeper than {MAX_NESTING} levels (the limit)",
                    lineno + 1
                )));
            }
            prev = c;
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_and_block_nesting_are_refused_fast() {
        let t = std::time::Instant::now();
        let flow = "[".repeat(100_000);
        assert!(check_nesting(&format!("A: {flow}"), "x").is_err());
        let dashes = "- ".repeat(100_000);
        assert!(check_nesting(&format!("A:\n  {dashes}1\n"), "x").is_err());
        assert!(t.elapsed().as_millis() < 500, "{:?}", t.elapsed());
    }

    #[test]
    fn real_configs_pass() {
        let y = "A:\n  B: [1, 2, {c: '[[[[', d: \"]\"}]  # [[[\n  C:\n  - - 0\n    - 96\n";
        assert!(check_nesting(y, "x").is_ok());
        let deep: String = (0..MAX_NESTING - 2)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(check_nesting(&deep, "x").is_ok());
    }
}
