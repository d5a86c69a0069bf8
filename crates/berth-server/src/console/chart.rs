//! Charts as inline SVG, drawn on the server: no script library to ship or test.

use std::fmt::Write;

use super::history::{rates, Sample, EVERY};
use super::html::esc;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 140.0;
const PAD: f64 = 28.0;

/// One line: its name, colour and values (oldest first, one per sample).
struct Series {
    name: &'static str,
    colour: &'static str,
    values: Vec<f64>,
}

/// Put and delivered rates, and depth, over the samples.
pub(crate) fn queue_charts(samples: &[Sample]) -> String {
    let pairs: Vec<_> = samples.windows(2).map(|w| rates(&w[0], &w[1])).collect();
    let rates = [
        Series { name: "put/s", colour: "#2563eb", values: pairs.iter().map(|r| r.put).collect() },
        Series { name: "delivered/s", colour: "#16a34a", values: pairs.iter().map(|r| r.delivered).collect() },
    ];
    let depth = [
        Series { name: "messages", colour: "#9333ea", values: samples.iter().map(|s| s.depth as f64).collect() },
        Series { name: "DLQ", colour: "#dc2626", values: samples.iter().map(|s| s.dlq_depth as f64).collect() },
    ];
    format!("{}{}", chart("Rates", &rates), chart("Depth", &depth))
}

fn chart(title: &str, series: &[Series]) -> String {
    let points = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let top = series.iter().flat_map(|s| s.values.iter().copied()).fold(0.0_f64, f64::max).max(1.0);
    let span_secs = points.saturating_sub(1) as u64 * EVERY.as_secs();
    let mut svg = format!(
        r#"<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(
        svg,
        r##"<rect x="{PAD}" y="8" width="{}" height="{}" fill="none" stroke="#ddd"/><text x="{PAD}" y="{}" class="axis">{} ago</text><text x="{}" y="{}" class="axis" text-anchor="end">now</text><text x="{}" y="16" class="axis" text-anchor="end">{}</text><text x="{}" y="{}" class="axis" text-anchor="end">0</text>"##,
        WIDTH - 2.0 * PAD,
        HEIGHT - 36.0,
        HEIGHT - 12.0,
        if span_secs >= 60 { format!("{} min", span_secs / 60) } else { format!("{span_secs} s") },
        WIDTH - PAD,
        HEIGHT - 12.0,
        PAD - 4.0,
        short(top),
        PAD - 4.0,
        HEIGHT - 28.0,
    );
    for (i, s) in series.iter().enumerate() {
        if s.values.len() >= 2 {
            let step = (WIDTH - 2.0 * PAD) / (points - 1) as f64;
            let offset = points - s.values.len();
            let line: Vec<String> = s
                .values
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let x = PAD + (offset + j) as f64 * step;
                    let y = 8.0 + (HEIGHT - 36.0) * (1.0 - v / top);
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                s.colour,
                line.join(" ")
            );
        }
        let x = PAD + 160.0 * i as f64 + 90.0;
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{}" class="legend" fill="{}">{} {}</text>"#,
            HEIGHT - 12.0,
            s.colour,
            esc(s.name),
            s.values.last().map_or_else(|| "–".to_owned(), |v| short(*v))
        );
    }
    let _ = write!(svg, r#"<text x="{}" y="16" class="title">{}</text></svg>"#, PAD + 4.0, esc(title));
    svg
}

/// A number for a label: whole above 10, one decimal below.
fn short(value: f64) -> String {
    if value >= 10.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
