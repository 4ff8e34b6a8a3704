//! The one step between tb's text and a person's screen or log: every log
//! writer (stderr, `supervisor.log`) and the error printer go through
//! [`text`]. Registered secrets become `***` ([`crate::secrets`]); control
//! characters other than newline and tab are escaped (`\u{1b}`), so that a
//! name or value from a batch file cannot drive the terminal; and an
//! overlong line is cut, saying how much was cut. A TOML excerpt's caret
//! line is cut and widened with its source line, so that it still points
//! at the column it marks.

use crate::secrets;
use std::borrow::Cow;

/// How text is rendered for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Lines longer than this many characters are cut.
    pub line_max: usize,
    /// SGR colour sequences (`ESC [ … m`) pass: tracing's own, on a colour
    /// terminal (tracing escapes ESC in the messages themselves).
    pub colors: bool,
}

impl Policy {
    /// stderr, and the error printer.
    pub const TERMINAL: Policy = Policy {
        line_max: 300,
        colors: false,
    };
    /// `supervisor.log`: a record read later, whose long lines (an engine's
    /// error, a list of jobs) are worth keeping further.
    pub const FILE: Policy = Policy {
        line_max: 4000,
        colors: false,
    };

    pub fn with_colors(self, colors: bool) -> Policy {
        Policy { colors, ..self }
    }
}

/// `s` made safe to show under `policy`.
pub fn text(s: &str, policy: Policy) -> String {
    let redacted = secrets::redact(s);
    let lines: Vec<&str> = redacted.split('\n').collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        if let Some(marks) = lines.get(i + 1)
            && let Some((source, carets)) = excerpt(lines[i], marks, policy)
        {
            out.push(source);
            out.push(carets);
            i += 2;
        } else {
            out.push(line(lines[i], policy));
            i += 1;
        }
    }
    out.join("\n")
}

/// `s` with its control characters escaped, nothing cut: for table cells.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| escape(c).is_some()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(pieces(s, false).iter().map(|p| p.text.as_ref()).collect())
}

/// One character of a line as shown: itself, its escape, or a colour
/// sequence (which takes no room).
struct Piece<'a> {
    text: Cow<'a, str>,
    width: usize,
}

fn pieces(line: &str, colors: bool) -> Vec<Piece<'_>> {
    let mut out = Vec::with_capacity(line.len());
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        let n = match sgr_len(rest).filter(|_| colors) {
            Some(n) => {
                out.push(Piece {
                    text: Cow::Borrowed(&rest[..n]),
                    width: 0,
                });
                n
            }
            None => {
                out.push(match escape(c) {
                    Some(e) => Piece {
                        width: e.chars().count(),
                        text: Cow::Owned(e),
                    },
                    None => Piece {
                        text: Cow::Borrowed(&rest[..c.len_utf8()]),
                        width: 1,
                    },
                });
                c.len_utf8()
            }
        };
        rest = &rest[n..];
    }
    out
}

/// The length of the SGR sequence `s` starts with, if it starts with one.
fn sgr_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix("\x1b[")?;
    let params = body.find(|c: char| !(c.is_ascii_digit() || c == ';'))?;
    body[params..].starts_with('m').then_some(2 + params + 1)
}

/// The escape of a C0 or C1 control character (or DEL), other than
/// newline and tab.
fn escape(c: char) -> Option<String> {
    let control = matches!(c, '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}') && c != '\n' && c != '\t';
    control.then(|| format!("\\u{{{:x}}}", c as u32))
}

fn width(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.width).sum()
}

fn cut_note(n: usize) -> String {
    format!("({n} characters cut)")
}

/// One line: escaped, and when too long, its middle cut (the end of a
/// message often says what was expected).
fn line(s: &str, policy: Policy) -> String {
    let p = pieces(s, policy.colors);
    let total = width(&p);
    if total <= policy.line_max {
        return p.iter().map(|p| p.text.as_ref()).collect();
    }
    let head = policy.line_max * 2 / 3;
    let tail = policy.line_max - head;
    let (mut i, mut kept) = (0, 0);
    while i < p.len() && kept + p[i].width <= head {
        kept += p[i].width;
        i += 1;
    }
    let (mut j, mut kept_tail) = (p.len(), 0);
    while j > i && kept_tail + p[j - 1].width <= tail {
        j -= 1;
        kept_tail += p[j].width;
    }
    let mut out: String = p[..i].iter().map(|p| p.text.as_ref()).collect();
    // Colour sequences of the cut part stay, so that colours still end.
    out.extend(p[i..j].iter().filter(|p| p.width == 0).map(|p| p.text.as_ref()));
    out.push_str(&format!(" … {} … ", cut_note(total - kept - kept_tail)));
    out.extend(p[j..].iter().map(|p| p.text.as_ref()));
    out
}

/// A TOML excerpt, `N | source` over `  | ^^^` with the bars in the same
/// column: rendered together, the marks under the characters they mark
/// (widened where a character became an escape), and when the source is
/// too long, both cut to the same window around the first mark.
fn excerpt(source: &str, marks: &str, policy: Policy) -> Option<(String, String)> {
    let bar = source.find(" | ")? + 1;
    let number = source[..bar - 1].trim_start_matches(' ');
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let under_bar = marks.get(..bar)?;
    let rest = marks.get(bar..)?.strip_prefix("| ")?;
    if !under_bar.bytes().all(|b| b == b' ') || !rest.contains('^') || rest.contains(|c| c != ' ' && c != '^') {
        return None;
    }
    let (prefix, marks_prefix) = (&source[..bar + 2], &marks[..bar + 2]);
    let p = pieces(&source[bar + 2..], false);
    let mut chars = rest.chars();
    let under: Vec<String> = p
        .iter()
        .map(|piece| match chars.next() {
            Some('^') => "^".repeat(piece.width),
            Some(_) => " ".repeat(piece.width),
            None => String::new(),
        })
        .collect();
    // A mark may stand one past the end of the line.
    let beyond: String = chars.collect();

    let budget = policy.line_max.saturating_sub(prefix.len()).max(40);
    let first = p
        .iter()
        .zip(&under)
        .take_while(|(_, u)| !u.contains('^'))
        .map(|(p, _)| p.width)
        .sum::<usize>();
    let start = if width(&p) <= budget || first < budget * 2 / 3 {
        0
    } else {
        first - budget / 3
    };
    let (mut shown, mut shown_under) = (String::new(), String::new());
    let (mut before, mut after, mut offset) = (0, 0, 0);
    for (piece, u) in p.iter().zip(&under) {
        if offset < start {
            before += piece.width;
        } else if offset + piece.width <= start + budget {
            shown.push_str(&piece.text);
            shown_under.push_str(u);
        } else {
            after += piece.width;
        }
        offset += piece.width;
    }
    let left = if before > 0 {
        format!("{} … ", cut_note(before))
    } else {
        String::new()
    };
    let right = if after > 0 {
        format!(" … {}", cut_note(after))
    } else {
        shown_under.push_str(&beyond);
        String::new()
    };
    let source = format!("{prefix}{left}{shown}{right}");
    let marks = format!("{marks_prefix}{}{shown_under}", " ".repeat(left.chars().count()));
    Some((source, marks.trim_end().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column_of(line: &str, c: char) -> usize {
        line.chars().position(|x| x == c).unwrap()
    }

    #[test]
    fn control_characters_are_escaped_but_newline_and_tab_stay() {
        let shown = text("a\u{1b}[31mred\r\tb\u{9b}\nc\u{7f}", Policy::TERMINAL);
        assert_eq!(shown, "a\\u{1b}[31mred\\u{d}\tb\\u{9b}\nc\\u{7f}");
    }

    #[test]
    fn colours_pass_only_when_asked_and_only_as_colours() {
        let log = "\u{1b}[32m INFO\u{1b}[0m hi \u{1b}]0;title\u{7}";
        let shown = text(log, Policy::TERMINAL.with_colors(true));
        assert_eq!(shown, "\u{1b}[32m INFO\u{1b}[0m hi \\u{1b}]0;title\\u{7}");
        assert!(!text(log, Policy::TERMINAL).contains('\u{1b}'));
    }

    #[test]
    fn a_long_line_keeps_its_ends_and_says_how_much_was_cut() {
        let long = format!("name `{}` is too long, expected a short name", "x".repeat(10_000));
        let shown = text(&long, Policy::TERMINAL);
        assert!(shown.chars().count() < 340, "{shown}");
        assert!(shown.starts_with("name `xxx"), "{shown}");
        assert!(shown.ends_with("xxx` is too long, expected a short name"), "{shown}");
        let (head, rest) = shown.split_once(" … (").unwrap();
        let (cut, tail) = rest.split_once(" characters cut) … ").unwrap();
        let cut: usize = cut.parse().unwrap();
        assert_eq!(head.chars().count() + cut + tail.chars().count(), long.chars().count());
    }

    #[test]
    fn a_caret_stays_under_an_escaped_character() {
        let excerpt = "      |\n    2 | name = \"a\u{1b}[31mred\"\n      |          ^\ninvalid";
        let shown = text(excerpt, Policy::TERMINAL);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[1], "    2 | name = \"a\\u{1b}[31mred\"");
        assert_eq!(lines[2], "      |          ^^^^^^");
        assert_eq!(column_of(lines[2], '^'), column_of(lines[1], '\\'));
    }

    #[test]
    fn a_long_excerpt_is_cut_around_its_caret() {
        let value = "v".repeat(5000);
        let source = format!("{}cpus = \"{value}\" # {}", "k".repeat(3000), "c".repeat(2000));
        let caret = format!("  | {}^^^^", " ".repeat(3000 + 7));
        let shown = text(&format!("1 | {source}\n{caret}"), Policy::TERMINAL);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[0].chars().count() < 360, "{}", lines[0]);
        assert!(lines[0].starts_with("1 | (2"), "{}", lines[0]);
        assert!(lines[0].ends_with(" characters cut)"), "{}", lines[0]);
        let at = column_of(lines[1], '^');
        let shown_source: Vec<char> = lines[0].chars().collect();
        assert_eq!(&shown_source[at - 7..at + 1].iter().collect::<String>(), "cpus = \"");
        assert!(lines[1].ends_with("^^^^"), "{}", lines[1]);
    }

    #[test]
    fn a_short_excerpt_is_left_alone() {
        let e = "  |\n3 | memroy = \"8g\"\n  | ^^^^^^\nunknown field";
        assert_eq!(text(e, Policy::TERMINAL), e);
    }

    #[test]
    fn secrets_go_before_anything_is_cut() {
        crate::secrets::register("s3cret-a7Q2-value");
        let line = format!("{} s3cret-a7Q2-value", "y".repeat(295));
        let shown = text(&line, Policy::TERMINAL);
        assert!(!shown.contains("a7Q2"), "{shown}");
        assert!(shown.ends_with("***"), "{shown}");
    }
}
