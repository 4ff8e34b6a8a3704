//! User-facing errors: the `error: … / caused by: … / hint: …` rendering.

use std::fmt;

/// An error whose cause the user can fix, carrying what to do about it.
///
/// Attach with [`hint`]; [`render`] prints the hint under the cause chain.
#[derive(Debug)]
pub struct Hint(pub String);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Hint {}

/// Wraps `err` so that its rendering ends with `hint: {hint}`.
pub fn with_hint(err: anyhow::Error, hint: impl Into<String>) -> anyhow::Error {
    err.context(HintLayer(hint.into()))
}

/// A context layer that renders as nothing in the chain and as a `hint:` line.
#[derive(Debug)]
struct HintLayer(String);

impl fmt::Display for HintLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds an error with a hint in one go.
pub fn hinted(message: impl fmt::Display, hint: impl Into<String>) -> anyhow::Error {
    with_hint(anyhow::anyhow!("{message}"), hint)
}

/// Renders `err` to stderr as `error: …`, its causes, and any hints, made
/// safe for the terminal (no secret, no control character, no endless
/// line: [`crate::sanitize`]).
pub fn render(err: &anyhow::Error) {
    eprint!(
        "{}",
        crate::sanitize::text(&format(err), crate::sanitize::Policy::TERMINAL)
    );
}

/// The text [`render`] prints.
pub fn format(err: &anyhow::Error) -> String {
    // anyhow finds a context value anywhere in the chain by type; the chain
    // itself only shows text, so the hint layer is recognised by its text.
    let hint = err
        .downcast_ref::<HintLayer>()
        .map(|h| h.0.clone())
        .or_else(|| err.downcast_ref::<Hint>().map(|h| h.0.clone()));
    let mut out = String::new();
    let mut first = true;
    for cause in err.chain() {
        let text = cause.to_string();
        if hint.as_deref() == Some(text.as_str()) {
            continue;
        }
        let text = text.trim_end();
        if first {
            out.push_str(&format!("error: {}\n", indent_rest(text, "  ")));
            first = false;
        } else {
            out.push_str(&format!("  caused by: {}\n", indent_rest(text, "    ")));
        }
    }
    if let Some(hint) = hint {
        out.push_str(&format!("hint: {}\n", indent_rest(&hint, "  ")));
    }
    out
}

fn indent_rest(text: &str, pad: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| if i == 0 { l.to_string() } else { format!("{pad}{l}") })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_renders_after_the_chain() {
        let err = hinted("no such batch `x`", "run `tb ls` to see the batches").context("failed to show status");
        assert_eq!(
            format(&err),
            "error: failed to show status\n  caused by: no such batch `x`\nhint: run `tb ls` to see the batches\n"
        );
    }
}
