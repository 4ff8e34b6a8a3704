//! The values tb must never print: those `pass_env` copies from tb's
//! environment into containers. A process-wide registry, filled where the
//! values are read, whose every spelling [`crate::sanitize`] replaces with
//! `***` in the logs and in error messages.

use std::sync::RwLock;

/// Values shorter than this (in characters) are not hidden: a short value
/// turns up by chance in ordinary text (a 1-character value would blank
/// every such digit of the logs), and hiding it would garble the log
/// without keeping anything secret. docs/batch-file.md says so.
pub const MIN_LEN: usize = 6;

/// What secrets are replaced with.
pub const MASK: &str = "***";

/// Every spelling of every registered secret, longest first.
static SPELLINGS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Reads `name` from tb's environment, for a container, and registers its
/// value as a secret; `None` when it is not set.
pub fn read_pass_env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok()?;
    register(&value);
    Some(value)
}

/// Registers the values of the environment variables `names` (a plan's
/// `pass_env`), as soon as the plan is resolved; says which are too short
/// to hide.
pub fn register_pass_env<'a>(names: impl IntoIterator<Item = &'a String>) {
    let mut short = std::collections::BTreeSet::new();
    for name in names {
        if let Ok(value) = std::env::var(name)
            && !register(&value)
            && !value.is_empty()
        {
            short.insert(name.as_str());
        }
    }
    for name in short {
        tracing::warn!(
            "pass_env `{name}` is shorter than {MIN_LEN} characters: tb does not hide such a value in its logs"
        );
    }
}

/// Registers `value`; `false` when it is too short to be hidden.
pub fn register(value: &str) -> bool {
    if value.chars().count() < MIN_LEN {
        return false;
    }
    let mut all = SPELLINGS.write().unwrap_or_else(|e| e.into_inner());
    for s in spellings(value) {
        if !all.contains(&s) {
            all.push(s);
        }
    }
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    true
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let all = SPELLINGS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = std::borrow::Cow::Borrowed(text);
    for s in all.iter() {
        if out.contains(s.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(s.as_str(), MASK));
        }
    }
    out
}

/// How `value` can appear in a log line: as itself, inside a JSON string
/// (bollard logs request bodies), a Rust `{:?}` string or byte string
/// (bollard's trace of the bytes it sends), and with tracing's escaping of
/// terminal control characters on top of any of these.
fn spellings(value: &str) -> Vec<String> {
    let mut found = vec![value.to_string()];
    let encodings: [fn(&str) -> String; 3] = [json_inner, debug_inner, bytes_debug];
    for e in encodings {
        for s in found.clone() {
            found.push(e(&s));
        }
    }
    for s in found.clone() {
        found.push(tracing_escaped(&s));
    }
    found.sort();
    found.dedup();
    found
}

fn json_inner(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_string()
}

fn debug_inner(s: &str) -> String {
    let quoted = format!("{s:?}");
    quoted[1..quoted.len() - 1].to_string()
}

/// As the `bytes` crate's `Debug` writes a byte string (without `b"…"`).
fn bytes_debug(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' | b'"' => {
                out.push('\\');
                out.push(b as char);
            }
            b'\0' => out.push_str("\\0"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// As tracing-subscriber escapes control characters in a message.
fn tracing_escaped(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if ('\u{80}'..='\u{9f}').contains(&c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_hidden_in_every_spelling_a_log_gives_it() {
        let secret = "k3y-\"quoted\"\\ü\u{1b}-a91f";
        assert!(register(secret));
        let json = serde_json::json!({ "Env": [format!("TOKEN={secret}")] }).to_string();
        let bytes = format!("request: Full {{ data: Some(b\"{}\") }}", bytes_debug(&json));
        let sanitized = tracing_escaped(&format!("{secret:?}"));
        for text in [secret.to_string(), json, format!("{secret:?}"), bytes, sanitized] {
            let shown = redact(&text);
            assert!(!shown.contains("a91f"), "{text} became {shown}");
            assert!(shown.contains(MASK), "{shown}");
        }
    }

    #[test]
    fn short_values_are_not_registered() {
        assert!(!register("7"));
        assert!(!register("ab12c"));
        assert_eq!(redact("7 ab12c"), "7 ab12c");
    }

    #[test]
    fn the_longest_spelling_goes_first() {
        register("pw-0c2e7d");
        register("pw-0c2e7d-and-more");
        assert_eq!(redact("x pw-0c2e7d-and-more y"), "x *** y");
    }
}
