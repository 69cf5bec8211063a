//! The `pattern` keyword: a regular expression a string field's value must match somewhere
//! (JSON Schema patterns are not anchored: `^` and `$` anchor them).
//!
//! Patterns run as a DFA from `regex-automata` (already in the build for log filters), over
//! bytes, without Unicode classes: `\d`, `\w` and `\s` are ASCII, as in ECMA-262, the dialect
//! XDM schemas are written in; `.` matches one byte. A pattern this engine cannot run
//! (look-around, back-references, or a DFA over the size limit) is not an error: the schema
//! compiles, the field's pattern is not checked, and the compiler says so in its warnings.

use regex_automata::Input;
use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;

/// The most memory one pattern's DFA (and its construction) may take.
const MAX_DFA_BYTES: usize = 4 * 1024 * 1024;

/// A compiled `pattern`.
pub(crate) struct Pattern {
    source: String,
    dfa: dense::DFA<Vec<u32>>,
}

impl Pattern {
    /// Compiles a pattern; `Err` says why this engine cannot run it.
    pub(crate) fn compile(source: &str) -> Result<Pattern, String> {
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .thompson(
                thompson::Config::new()
                    .utf8(false)
                    .nfa_size_limit(Some(MAX_DFA_BYTES)),
            )
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Unanchored)
                    .dfa_size_limit(Some(MAX_DFA_BYTES))
                    .determinize_size_limit(Some(MAX_DFA_BYTES)),
            )
            .build(source)
            .map_err(|e| e.to_string())?;
        Ok(Pattern {
            source: source.to_owned(),
            dfa,
        })
    }

    /// Whether the pattern matches somewhere in `s`. A search the DFA gives up on (it cannot
    /// tell) counts as a match: a value is never refused for the engine's sake.
    pub(crate) fn is_match(&self, s: &str) -> bool {
        let input = Input::new(s).earliest(true);
        !matches!(self.dfa.try_search_fwd(&input), Ok(None))
    }

    /// The pattern as the schema wrote it.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_anywhere_unless_anchored() {
        let zip = Pattern::compile(r"^\d{5}(-\d{4})?$").unwrap();
        assert!(zip.is_match("12345") && zip.is_match("12345-6789"));
        assert!(!zip.is_match("1234") && !zip.is_match("123456") && !zip.is_match("12a45"));
        let inner = Pattern::compile("[A-Z]{2}").unwrap();
        assert!(inner.is_match("xxFRxx") && !inner.is_match("fr"));
        assert!(Pattern::compile(r"^\w+$").unwrap().is_match("a_1"));
        assert!(!Pattern::compile(r"^\w+$").unwrap().is_match("é"));
    }

    #[test]
    fn patterns_the_engine_cannot_run_say_why() {
        let why = Pattern::compile(r"^(?=a)a$").expect_err("look-ahead is refused");
        assert!(!why.is_empty());
        assert!(Pattern::compile(r"(a)\1").is_err());
        assert!(Pattern::compile("[").is_err());
    }
}
