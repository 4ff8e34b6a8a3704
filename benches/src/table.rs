//! The one table `make bench` prints: a row per figure — tb's, what it is
//! measured against, their ratio, and the target with PASS or MISS — then
//! the count of targets met and each one missed. A measurement that
//! failed is a row saying so, never a missing row.

use std::fmt::Write;

#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
}

#[derive(Debug)]
enum Row {
    Heading(String),
    Figure(Figure),
    Failed(String),
}

#[derive(Debug, Default)]
pub struct Figure {
    what: String,
    tb: String,
    against: String,
    ratio: String,
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    text: String,
    met: bool,
}

impl Table {
    pub fn heading(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Heading(title.into()));
    }

    /// A figure of tb's, and what it is measured against ("" for nothing).
    pub fn row(&mut self, what: impl Into<String>, tb: impl Into<String>, against: impl Into<String>) -> &mut Figure {
        self.rows.push(Row::Figure(Figure {
            what: what.into(),
            tb: tb.into(),
            against: against.into(),
            ..Default::default()
        }));
        match self.rows.last_mut() {
            Some(Row::Figure(f)) => f,
            _ => unreachable!("a figure was just pushed"),
        }
    }

    pub fn failed(&mut self, what: &str, err: &anyhow::Error) {
        self.rows.push(Row::Failed(format!("{what} FAILED: {err:#}")));
    }

    /// (met, missed) targets, and the measurements that failed.
    pub fn counts(&self) -> (usize, usize, usize) {
        let targets: Vec<bool> = self
            .figures()
            .filter_map(|f| f.target.as_ref().map(|t| t.met))
            .collect();
        let failed = self.rows.iter().filter(|r| matches!(r, Row::Failed(_))).count();
        let met = targets.iter().filter(|m| **m).count();
        (met, targets.len() - met, failed)
    }

    fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.rows.iter().filter_map(|r| match r {
            Row::Figure(f) => Some(f),
            _ => None,
        })
    }

    pub fn render(&self) -> String {
        let cells = |f: &Figure| {
            let target = f.target.as_ref().map_or(String::new(), |t| {
                format!("{}  {}", t.text, if t.met { "PASS" } else { "MISS" })
            });
            [f.what.clone(), f.tb.clone(), f.against.clone(), f.ratio.clone(), target]
        };
        let header = ["figure", "tb", "against", "ratio", "target"].map(String::from);
        let mut widths = header.clone().map(|h| width(&h));
        for f in self.figures() {
            for (w, c) in widths.iter_mut().zip(cells(f)) {
                *w = (*w).max(width(&c));
            }
        }
        let line = |c: [String; 5]| {
            let mut s = String::new();
            for (i, (cell, w)) in c.iter().zip(widths).enumerate() {
                // Numbers line up on the right, words on the left.
                let pad = " ".repeat(w - width(cell));
                match i {
                    1 | 3 => write!(s, "{pad}{cell}  ").unwrap(),
                    _ => write!(s, "{cell}{pad}  ").unwrap(),
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(header);
        out += &"-".repeat(widths.iter().sum::<usize>() + 8);
        out.push('\n');
        for r in &self.rows {
            match r {
                Row::Heading(t) => out += &format!("{t}\n"),
                Row::Figure(f) => out += &line(cells(f)),
                Row::Failed(t) => out += &format!("  {t}\n"),
            }
        }
        let (met, missed, failed) = self.counts();
        out += &format!("\ntargets: {met} PASS, {missed} MISS");
        if failed > 0 {
            out += &format!("; {failed} measurement(s) FAILED");
        }
        out.push('\n');
        let mut section = "";
        for r in &self.rows {
            match r {
                // "30 × `true`, one at a time (medians of 3 rounds)" → "30 × `true`, one at a time".
                Row::Heading(h) => section = h.split(" (").next().unwrap_or(h),
                Row::Figure(f) => {
                    if let Some(t) = f.target.as_ref().filter(|t| !t.met) {
                        let value = if f.ratio.is_empty() { &f.tb } else { &f.ratio };
                        out += &format!("  MISS  {section}: {}: {value} (target {})\n", f.what.trim(), t.text);
                    }
                }
                Row::Failed(_) => {}
            }
        }
        out
    }
}

impl Figure {
    pub fn ratio(&mut self, r: f64) -> &mut Figure {
        self.ratio = format!("{r:.2}");
        self
    }

    /// A target: `text` as printed ("≤ 0.70"), `met` whether the figure meets it.
    pub fn target(&mut self, text: impl Into<String>, met: bool) -> &mut Figure {
        self.target = Some(Target { text: text.into(), met });
        self
    }

    /// The ratio and the target that it be at most `limit`, the ratio
    /// shown to three places so that the verdict can be read off it.
    pub fn at_most(&mut self, r: f64, limit: f64) -> &mut Figure {
        self.ratio = format!("{r:.3}");
        self.target(format!("≤ {limit:.2}"), r <= limit)
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Seconds as people read them: "0.43 s", "12.3 s", "123 s".
pub fn secs(s: f64) -> String {
    match s {
        s if s < 10.0 => format!("{s:.2} s"),
        s if s < 100.0 => format!("{s:.1} s"),
        s => format!("{s:.0} s"),
    }
}

/// A share of one core, in percent.
pub fn cores(c: f64) -> String {
    format!("{:.3} %", c * 100.0)
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_target_with_its_verdict_and_lists_the_misses() {
        let mut t = Table::default();
        // Just over the limit: the three places shown say why it missed.
        let mut edge = Table::default();
        edge.row("wall", "", "").at_most(0.9011, 0.9);
        assert!(edge.render().contains("0.901  ≤ 0.90  MISS"), "{}", edge.render());
        t.heading("30 × `true`, one at a time (medians of 3 rounds)");
        t.row("wall", secs(12.31), format!("pueue {}", secs(20.4)))
            .at_most(12.31 / 20.4, 0.7);
        t.row(
            "against the bare engine API",
            secs(12.31),
            format!("floor {}", secs(11.9)),
        )
        .at_most(12.31 / 11.9, 1.0);
        t.row("10,000 jobs", secs(41.0), "").target("≤ 2 s", false);
        t.row("no target", "1", "");
        t.failed("1 GiB of output", &anyhow::anyhow!("disk full"));
        let text = t.render();
        assert_eq!(t.counts(), (1, 2, 1));
        assert!(text.contains("0.603  ≤ 0.70  PASS"), "{text}");
        assert!(text.contains("1.034  ≤ 1.00  MISS"), "{text}");
        assert!(text.contains("1 GiB of output FAILED: disk full"), "{text}");
        assert!(
            text.contains("targets: 1 PASS, 2 MISS; 1 measurement(s) FAILED"),
            "{text}"
        );
        // Each miss again at the end, under the name of its part of the table.
        let misses: Vec<&str> = text.lines().filter(|l| l.starts_with("  MISS  ")).collect();
        assert_eq!(
            misses,
            [
                "  MISS  30 × `true`, one at a time: against the bare engine API: 1.034 (target ≤ 1.00)",
                "  MISS  30 × `true`, one at a time: 10,000 jobs: 41.0 s (target ≤ 2 s)",
            ]
        );
        // Every figure row is as wide as the header says.
        let starts: Vec<usize> = text
            .lines()
            .filter(|l| l.contains(" s ") && !l.contains("MISS  "))
            .map(|l| l.find(" s").unwrap())
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "tb's column lines up: {text}");
    }

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(secs(0.4321), "0.43 s");
        assert_eq!(secs(12.345), "12.3 s");
        assert_eq!(secs(93.44), "93.4 s");
        assert_eq!(secs(123.4), "123 s");
        assert_eq!(cores(0.00065), "0.065 %");
        assert_eq!(mb(9_100_000), "9.1 MB");
    }
}
