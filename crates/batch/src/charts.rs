//! Charts of the marts as SVG (a bar per label), drawn by hand: any browser or image viewer
//! opens them, and nothing needs a font or a graphics library to make them.

use std::fmt::Write;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 90.0;

/// Text safe inside SVG.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// 1 234 567 as "1.23M", 12 345 as "12.3k".
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A round step for about five gridlines up to `max`.
fn grid_step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw)
}

/// A bar chart of `bars` (label, value), values in `unit`.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let step = grid_step(max);
    let top_value = (max / step).ceil().max(1.0) * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h - v / top_value * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{}" y="28" font-size="18" text-anchor="middle">{}</text>
"##,
        WIDTH / 2.0,
        escape(title)
    );
    let mut v = 0.0;
    while v <= top_value + step / 2.0 {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            short(v),
            y = y(v),
        );
        v += step;
    }
    let _ = writeln!(
        svg,
        r##"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"##,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(unit)
    );
    let slot = plot_w / bars.len().max(1) as f64;
    let width = (slot * 0.8).max(1.0);
    // Label every bar when they fit, else every n-th.
    let every = ((bars.len() as f64 * 14.0) / plot_w).ceil().max(1.0) as usize;
    for (i, (label, value)) in bars.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - width) / 2.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="#8a5a2b"><title>{}: {}</title></rect>"##,
            y(*value),
            (y(0.0) - y(*value)).max(0.0),
            escape(label),
            value
        );
        if i % every == 0 {
            let lx = x + width / 2.0;
            let ly = TOP + plot_h + 12.0;
            let _ = writeln!(
                svg,
                r##"<text x="{lx:.1}" y="{ly:.1}" transform="rotate(45 {lx:.1} {ly:.1})">{}</text>"##,
                escape(label)
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#333333"/>"##,
        WIDTH - RIGHT,
        y(0.0),
        y(0.0)
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_per_value_scaled_to_the_largest() {
        let svg = bar_chart(
            "Revenue <by> day",
            "VND",
            &[("2026-11-24".into(), 500.0), ("2026-11-25".into(), 1000.0)],
        );
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("Revenue &lt;by&gt; day"));
        assert!(svg.contains("<title>2026-11-25: 1000</title>"));
        // The largest bar reaches the top gridline (1000 is a round step's multiple).
        assert!(svg.contains(&format!(r#"y="{TOP:.1}""#)), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn gridlines_are_round_and_numbers_short() {
        assert_eq!(grid_step(1000.0), 200.0);
        assert_eq!(grid_step(12_345_678.0), 2_500_000.0);
        assert_eq!(short(12_345.0), "12.3k");
        assert_eq!(short(2_500_000.0), "2.50M");
        assert_eq!(
            bar_chart("empty", "VND", &[]).matches("<rect x=").count(),
            0
        );
    }
}
