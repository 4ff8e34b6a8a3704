//! The report's SVG charts, drawn with plotters: a job's curves, grouped
//! (losses together, each other metric with its train/val/test siblings,
//! the learning rate apart), and the monitored metric compared across jobs.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const BAR: RGBColor = RGBColor(44, 160, 44);

/// How many charts one job gets at most.
pub const MAX_GROUPS: usize = 6;

/// A job's metrics grouped into charts: its title and the metrics drawn in
/// it. Losses first, then the others by name, the learning rate last.
pub fn groups(series: &BTreeMap<String, Vec<(u64, f64)>>) -> Vec<(String, Vec<&str>)> {
    let mut by_key: BTreeMap<(u8, String), Vec<&str>> = BTreeMap::new();
    for name in series.keys() {
        let lower = name.to_ascii_lowercase();
        let key =
            if lower == "lr" || lower.starts_with("lr-") || lower.starts_with("lr_") || lower.contains("learning_rate")
            {
                (2, "learning rate".to_string())
            } else if lower.contains("loss") {
                (0, "loss".to_string())
            } else {
                let base = [
                    "train_",
                    "training_",
                    "val_",
                    "valid_",
                    "validation_",
                    "test_",
                    "train/",
                    "val/",
                    "test/",
                ]
                .iter()
                .find_map(|p| lower.strip_prefix(p))
                .unwrap_or(&lower);
                (1, base.to_string())
            };
        by_key.entry(key).or_default().push(name);
    }
    by_key.into_iter().map(|((_, title), names)| (title, names)).collect()
}

/// Several metrics on one chart against `x` (epoch, or step); `None` when
/// there is nothing finite to draw.
pub fn curves(title: &str, x: &str, lines: &[(&str, &[(u64, f64)])]) -> anyhow::Result<Option<String>> {
    let values = lines
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Ok(None);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let xs = lines.iter().flat_map(|(_, s)| s.iter().map(|p| p.0));
    let (first, last) = xs.fold((u64::MAX, 0), |(a, b), x| (a.min(x), b.max(x)));
    let last = last.max(first + 1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (340, 230)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(52)
            .build_cartesian_2d(first as i64..last as i64, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(x)
            .x_labels(6)
            .y_labels(6)
            .label_style(("sans-serif", 11))
            .y_label_formatter(&|y| tick(*y, lo, hi))
            .draw()?;
        for (i, (name, series)) in lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(i64, f64)> = series
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|p| (p.0 as i64, p.1))
                .collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// How one job's line is drawn in an overlay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ink {
    /// In its own colour, in the legend; `bold` for the best job.
    Colour { index: usize, bold: bool },
    /// Grey, one of "the others".
    Grey,
}

/// One job's line in an overlay: its name, its points, how it is drawn.
pub type Line<'a> = (&'a str, &'a [(u64, f64)], Ink);

/// Every job's curve of one metric on one chart (`lines` best first); the
/// coloured ones are named in the legend, the grey ones counted.
pub fn overlay(title: &str, x: &str, lines: &[Line<'_>]) -> anyhow::Result<Option<String>> {
    let values = lines
        .iter()
        .flat_map(|(_, s, _)| s.iter().map(|p| p.1))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Ok(None);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let xs = lines.iter().flat_map(|(_, s, _)| s.iter().map(|p| p.0));
    let (first, last) = xs.fold((u64::MAX, 0), |(a, b), x| (a.min(x), b.max(x)));
    let last = last.max(first + 1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 340)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(first as i64..last as i64, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(x)
            .x_labels(8)
            .y_labels(6)
            .label_style(("sans-serif", 11))
            .y_label_formatter(&|y| tick(*y, lo, hi))
            .draw()?;
        let grey = RGBColor(170, 170, 170);
        let others = lines.iter().filter(|l| l.2 == Ink::Grey).count();
        // Grey first, so that the coloured lines are drawn over them; those
        // best first, so that the legend reads as the ranking (the best
        // line is the thickest, visible under the others).
        let mut order: Vec<&Line<'_>> = lines.iter().filter(|l| l.2 == Ink::Grey).collect();
        order.extend(lines.iter().filter(|l| l.2 != Ink::Grey));
        let mut grey_labelled = false;
        for (name, series, ink) in order {
            let points: Vec<(i64, f64)> = series
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|p| (p.0 as i64, p.1))
                .collect();
            if points.is_empty() {
                continue;
            }
            match *ink {
                Ink::Grey => {
                    let drawn = chart.draw_series(LineSeries::new(points, grey.mix(0.7).stroke_width(1)))?;
                    if !grey_labelled {
                        grey_labelled = true;
                        drawn
                            .label(format!("{others} others"))
                            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(2)));
                    }
                }
                Ink::Colour { index, bold } => {
                    let color = PALETTE[index % PALETTE.len()];
                    let width = if bold { 4 } else { 2 };
                    chart
                        .draw_series(LineSeries::new(points, color.stroke_width(width)))?
                        .label(if bold {
                            format!("{name} (best)")
                        } else {
                            name.to_string()
                        })
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width)));
                }
            }
        }
        chart
            .configure_series_labels()
            .position(legend_corner(lines.iter().map(|l| l.1)))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// Where a legend hides the least: curves that fall end low on the right,
/// rising ones high.
fn legend_corner<'a>(series: impl Iterator<Item = &'a [(u64, f64)]>) -> SeriesLabelPosition {
    let (mut first, mut last) = (0.0, 0.0);
    for s in series {
        if let (Some(a), Some(b)) = (s.first(), s.last()) {
            first += a.1;
            last += b.1;
        }
    }
    if last > first {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// An axis label: a value within rounding error of zero reads as 0.
fn tick(y: f64, lo: f64, hi: f64) -> String {
    if y.abs() < (hi - lo).abs() * 1e-9 {
        "0".into()
    } else {
        super::fmt_value(y)
    }
}

/// A swept key's values as bars of their mean best value, with ± one
/// standard deviation, best at the top.
pub fn levels(key: &str, metric: &str, levels: &[(String, f64, Option<f64>)]) -> anyhow::Result<Option<String>> {
    if levels.is_empty() {
        return Ok(None);
    }
    let n = levels.len() as i32;
    let top = levels
        .iter()
        .map(|(_, m, s)| m + s.unwrap_or(0.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let bottom = levels
        .iter()
        .map(|(_, m, s)| m - s.unwrap_or(0.0))
        .fold(f64::INFINITY, f64::min);
    let span = if top > bottom { top - bottom } else { top.abs().max(1.0) };
    // Bars start at 0: the range holds it whatever the signs.
    let (lo, hi) = (bottom.min(0.0) - span * 0.02, top.max(0.0) + span * 0.2);
    let longest = levels.iter().map(|l| l.0.chars().count()).max().unwrap_or(4).min(24);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 60 + 26 * n as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{metric} by {key}"), ("sans-serif", 13))
            .margin(6)
            .x_label_area_size(24)
            .y_label_area_size(16 + 7 * longest as u32)
            .build_cartesian_2d(lo..hi, (0..n).into_segmented())?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) if (0..n).contains(i) => levels[(n - 1 - i) as usize].0.clone(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .y_labels(levels.len())
            .label_style(("sans-serif", 11))
            .y_label_formatter(&label)
            .x_label_formatter(&|x| super::fmt_value(*x))
            .draw()?;
        chart.draw_series(levels.iter().enumerate().map(|(rank, (_, mean, _))| {
            let i = n - 1 - rank as i32;
            let mut bar = Rectangle::new(
                [
                    (0.0f64.max(lo), SegmentValue::Exact(i)),
                    (*mean, SegmentValue::Exact(i + 1)),
                ],
                BAR.mix(0.75).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))?;
        for (rank, (_, mean, std)) in levels.iter().enumerate() {
            if let Some(s) = std {
                let i = n - 1 - rank as i32;
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![
                        (mean - s, SegmentValue::CenterOf(i)),
                        (mean + s, SegmentValue::CenterOf(i)),
                    ],
                    BLACK.stroke_width(2),
                )))?;
            }
        }
        chart.draw_series(levels.iter().enumerate().map(|(rank, (_, mean, std))| {
            let i = n - 1 - rank as i32;
            let text = match std {
                Some(s) => format!(" {} ± {}", super::fmt_value(*mean), super::fmt_value(*s)),
                None => format!(" {}", super::fmt_value(*mean)),
            };
            Text::new(
                text,
                ((*mean + std.unwrap_or(0.0)).max(0.0), SegmentValue::CenterOf(i)),
                TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// One horizontal bar per job, best at the top.
pub fn comparison(metric: &str, jobs: &[(&str, f64)]) -> anyhow::Result<Option<String>> {
    if jobs.is_empty() {
        return Ok(None);
    }
    let n = jobs.len() as i32;
    let lo = jobs.iter().map(|j| j.1).fold(0.0f64, f64::min);
    let hi = jobs.iter().map(|j| j.1).fold(0.0f64, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (lo, hi) = (if lo < 0.0 { lo - span * 0.05 } else { 0.0 }, hi + span * 0.15);
    let longest = jobs.iter().map(|j| j.0.chars().count()).max().unwrap_or(4).min(40);
    let height = 70 + 20 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("best {metric} by job"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(16 + 7 * longest as u32)
            .build_cartesian_2d(lo..hi, (0..n).into_segmented())?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) if (0..n).contains(i) => {
                let name = jobs[(n - 1 - i) as usize].0;
                if name.chars().count() > 40 {
                    format!("{}…", name.chars().take(39).collect::<String>())
                } else {
                    name.to_string()
                }
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .y_labels(jobs.len())
            .label_style(("sans-serif", 12))
            .y_label_formatter(&label)
            .x_label_formatter(&|x| super::fmt_value(*x))
            .draw()?;
        chart.draw_series(jobs.iter().enumerate().map(|(rank, (_, v))| {
            let i = n - 1 - rank as i32;
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (*v, SegmentValue::Exact(i + 1))],
                BAR.mix(0.8).filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))?;
        chart.draw_series(jobs.iter().enumerate().map(|(rank, (_, v))| {
            let i = n - 1 - rank as i32;
            Text::new(
                format!(" {}", super::fmt_value(*v)),
                (v.max(0.0), SegmentValue::CenterOf(i)),
                TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))?;
        root.present()?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_draw_every_line_and_escape_the_title() {
        let train: Vec<(u64, f64)> = (0..5).map(|e| (e, 1.0 / (e + 1) as f64)).collect();
        let val: Vec<(u64, f64)> = (0..5).filter(|e| *e != 2).map(|e| (e, 1.2 / (e + 1) as f64)).collect();
        let svg = curves("a<b&c", "epoch", &[("train_loss", &train), ("val_loss", &val)])
            .unwrap()
            .unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a&lt;b&amp;c"));
        assert!(svg.contains("train_loss") && svg.contains("val_loss"));
        assert!(svg.matches("<polyline").count() >= 2);
        assert!(curves("x", "epoch", &[]).unwrap().is_none());
        assert!(curves("x", "epoch", &[("v", &[(0, f64::NAN)])]).unwrap().is_none());
    }

    #[test]
    fn an_overlay_names_the_coloured_jobs_and_counts_the_grey_ones() {
        let a: Vec<(u64, f64)> = (0..4).map(|e| (e, 1.0 / (e + 1) as f64)).collect();
        let b: Vec<(u64, f64)> = (0..4).map(|e| (e, 2.0 / (e + 1) as f64)).collect();
        let lines = [
            ("best_job", a.as_slice(), Ink::Colour { index: 0, bold: true }),
            ("second", b.as_slice(), Ink::Colour { index: 1, bold: false }),
            ("third", b.as_slice(), Ink::Grey),
            ("fourth", b.as_slice(), Ink::Grey),
        ];
        let svg = overlay("val_loss", "epoch", &lines).unwrap().unwrap();
        assert!(svg.contains("best_job (best)") && svg.contains("second"));
        assert!(svg.contains("2 others") && !svg.contains("third"));
        let svg = levels(
            "train.lr",
            "val_loss",
            &[("0.01".into(), 0.2, Some(0.01)), ("0.1".into(), 0.5, None)],
        )
        .unwrap()
        .unwrap();
        assert!(svg.contains("val_loss by train.lr") && svg.contains("0.2000 ± 0.0100"));
    }

    #[test]
    fn metrics_group_into_losses_siblings_and_the_learning_rate() {
        let series: BTreeMap<String, Vec<(u64, f64)>> = [
            "train_loss",
            "val_loss",
            "val_acc",
            "train_acc",
            "val_iou",
            "lr-AdamW",
            "grad_norm",
        ]
        .iter()
        .map(|n| (n.to_string(), vec![(0, 1.0)]))
        .collect();
        let g = groups(&series);
        let titles: Vec<&str> = g.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(titles, ["loss", "acc", "grad_norm", "iou", "learning rate"]);
        assert_eq!(g[0].1, ["train_loss", "val_loss"]);
        assert_eq!(g[1].1, ["train_acc", "val_acc"]);
    }

    #[test]
    fn comparison_labels_every_job() {
        let svg = comparison("val_loss", &[("first", 0.2), ("second", 0.3), ("third", 0.5)])
            .unwrap()
            .unwrap();
        for name in ["first", "second", "third", "0.2000", "0.5000"] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(comparison("v", &[]).unwrap().is_none());
    }
}
