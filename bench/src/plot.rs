//! `plot.svg`: ops/s against N (both axes logarithmic) per system, one panel
//! per operation. Plain SVG, no plotting dependency.

use std::fmt::Write as _;

use kvstash::bench::{Figure, Outcome};

const PANELS: [(&str, Figure); 3] = [
    ("random get", |m| m.get),
    ("put (new key)", |m| m.put),
    ("4-key transaction", |m| m.txn),
];

const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 300.0;
const MARGIN: f64 = 55.0;
const LEGEND_H: f64 = 90.0;

/// The plot of every measured outcome.
pub fn svg(outcomes: &[Outcome]) -> String {
    let mut systems: Vec<&str> = Vec::new();
    for o in outcomes {
        if !systems.contains(&o.system.as_str()) {
            systems.push(&o.system);
        }
    }
    let points = |system: &str, f: Figure| -> Vec<(f64, f64)> {
        outcomes
            .iter()
            .filter(|o| o.system == system)
            .filter_map(|o| {
                let rate = f(o.result.as_ref().ok()?)?;
                (rate > 0.0).then_some((o.n as f64, rate))
            })
            .collect()
    };
    let all: Vec<(f64, f64)> = systems
        .iter()
        .flat_map(|s| PANELS.iter().flat_map(move |(_, f)| points(s, *f)))
        .collect();
    let decade = |v: f64| v.log10();
    let (x0, x1) = bounds(all.iter().map(|p| decade(p.0)));
    let (y0, y1) = bounds(all.iter().map(|p| decade(p.1)));

    let width = MARGIN + PANELS.len() as f64 * (PANEL_W + MARGIN);
    let height = PANEL_H + 2.0 * MARGIN + LEGEND_H;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (index, (title, f)) in PANELS.iter().enumerate() {
        let left = MARGIN + index as f64 * (PANEL_W + MARGIN);
        let top = MARGIN;
        let sx = |x: f64| left + (decade(x) - x0) / (x1 - x0) * PANEL_W;
        let sy = |y: f64| top + PANEL_H - (decade(y) - y0) / (y1 - y0) * PANEL_H;
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{title} (ops/s)</text>"#,
            left + PANEL_W / 2.0,
            top - 10.0
        );
        for e in (x0.ceil() as i32)..=(x1.floor() as i32) {
            let x = sx(10f64.powi(e));
            let _ = writeln!(
                out,
                r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                top + PANEL_H,
                top + PANEL_H + 15.0,
                label(e)
            );
        }
        for e in (y0.ceil() as i32)..=(y1.floor() as i32) {
            let y = sy(10f64.powi(e));
            let _ = writeln!(
                out,
                r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                left + PANEL_W,
                left - 5.0,
                y + 4.0,
                label(e)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">N (keys in the store)</text>"#,
            left + PANEL_W / 2.0,
            top + PANEL_H + 32.0
        );
        for (s, system) in systems.iter().enumerate() {
            let color = COLORS[s % COLORS.len()];
            let pts = points(system, *f);
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for &(x, y) in &pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    sx(x),
                    sy(y)
                );
            }
        }
    }
    let legend_top = PANEL_H + 2.0 * MARGIN + 5.0;
    for (s, system) in systems.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let x = MARGIN + (s % 5) as f64 * 200.0;
        let y = legend_top + (s / 5) as f64 * 20.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{}">{system}</text>"#,
            y - 4.0,
            x + 20.0,
            y + 1.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Whole decades around the values (one decade if there are none).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() && hi.is_finite() {
        (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
    } else {
        (0.0, 1.0)
    }
}

fn label(exponent: i32) -> String {
    match exponent {
        e if e >= 6 => format!("{}M", 10i64.pow((e - 6).unsigned_abs())),
        e if e >= 3 => format!("{}k", 10i64.pow((e - 3).unsigned_abs())),
        e if e >= 0 => 10i64.pow(e.unsigned_abs()).to_string(),
        e => format!("1e{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstash::bench::Measured;

    #[test]
    fn plots_measured_points_and_skips_failures() {
        let measured = |get| Measured {
            get: Some(get),
            put: Some(get / 2.0),
            ..Measured::default()
        };
        let outcomes = vec![
            Outcome {
                system: "a".into(),
                n: 1000,
                result: Ok(measured(1e5)),
            },
            Outcome {
                system: "a".into(),
                n: 1_000_000,
                result: Ok(measured(5e4)),
            },
            Outcome {
                system: "b".into(),
                n: 1000,
                result: Err("skipped".into()),
            },
        ];
        let svg = svg(&outcomes);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Two panels with points of `a` (get, put), none for txn or `b`.
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains(">1M</text>") && svg.contains(">1k</text>"));
    }
}
