//! The report's SVG charts, drawn with plotters: a job's learning curve and
//! the monitored metric compared across jobs.

use super::model::Point;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(214, 39, 40);
const BAR: RGBColor = RGBColor(44, 160, 44);

/// Train and validation loss by epoch; `None` when there is nothing to draw.
pub fn learning_curve(title: &str, points: &[Point]) -> anyhow::Result<Option<String>> {
    let values = points
        .iter()
        .flat_map(|p| [p.train_loss, p.val_loss])
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Ok(None);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let first = points.first().map_or(0, |p| p.epoch);
    let last = points.last().map_or(1, |p| p.epoch).max(first + 1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(52)
            .build_cartesian_2d(first as i64..last as i64, (lo - pad) as f64..(hi + pad) as f64)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("epoch")
            .x_labels(8)
            .y_labels(6)
            .label_style(("sans-serif", 12))
            .y_label_formatter(&|y| super::fmt_value(*y))
            .draw()?;
        for (name, color, pick) in [
            ("train_loss", TRAIN, (|p: &Point| p.train_loss) as fn(&Point) -> f32),
            ("val_loss", VAL, |p: &Point| p.val_loss),
        ] {
            let series: Vec<(i64, f64)> = points
                .iter()
                .filter(|p| pick(p).is_finite())
                .map(|p| (p.epoch as i64, pick(p) as f64))
                .collect();
            if series.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(series, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
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
    fn curves_draw_both_losses_and_escape_the_title() {
        let pts: Vec<Point> = (0..5)
            .map(|e| Point {
                epoch: e,
                train_loss: 1.0 / (e + 1) as f32,
                val_loss: if e == 2 { f32::NAN } else { 1.2 / (e + 1) as f32 },
            })
            .collect();
        let svg = learning_curve("a<b&c", &pts).unwrap().unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a&lt;b&amp;c"));
        assert!(svg.contains("train_loss") && svg.contains("val_loss"));
        assert!(svg.matches("<polyline").count() >= 2);
        assert!(learning_curve("x", &[]).unwrap().is_none());
        let nan = Point {
            epoch: 0,
            train_loss: f32::NAN,
            val_loss: f32::NAN,
        };
        assert!(learning_curve("x", &[nan]).unwrap().is_none());
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
