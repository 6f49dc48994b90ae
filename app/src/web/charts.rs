//! Charts as inline SVG, drawn on the server: no script, no external assets. Each chart has a
//! `<title>` and a `<desc>` with its figures for screen readers, axis labels and a legend.

use std::fmt::Write as _;

use crate::domain::time::Timestamp;

const W: f64 = 520.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 62.0;
const BOTTOM: f64 = 50.0;

/// Series colours (distinguishable, AA contrast on white).
pub const COLORS: [&str; 4] = ["#2350c7", "#b42318", "#1a7f37", "#8250df"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper bound for an axis and its tick step.
fn nice_max(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (4.0, 1.0);
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
        .max(1.0);
    ((max / step).ceil() * step, step)
}

fn open(id: &str, title: &str, desc: &str) -> String {
    open_h(id, title, desc, H)
}

fn open_h(id: &str, title: &str, desc: &str, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {h}\" role=\"img\" \
         aria-labelledby=\"{id}-t {id}-d\" id=\"{id}\" font-family=\"system-ui, sans-serif\" font-size=\"14\">\
         <title id=\"{id}-t\">{}</title><desc id=\"{id}-d\">{}</desc>\
         <rect width=\"{W}\" height=\"{h}\" fill=\"#fff\"/>\
         <text x=\"4\" y=\"20\" font-size=\"17\" font-weight=\"600\" fill=\"#1b1f24\">{}</text>",
        esc(title),
        esc(desc),
        esc(title)
    )
}

fn y_axis(svg: &mut String, max: f64, step: f64, label: &str) {
    let plot_h = H - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= max + 1e-9 {
        let y = TOP + plot_h - v / max * plot_h;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            v as i64
        );
        v += step;
    }
    let _ = write!(
        svg,
        "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
        TOP + plot_h / 2.0,
        esc(label)
    );
}

fn hour_label(hour: Timestamp) -> String {
    hour.hour_start().time_of_day()
}

/// A line chart of `(time, value)` points over `[from, to]`.
pub fn line(
    id: &str,
    title: &str,
    y_label: &str,
    from: Timestamp,
    to: Timestamp,
    points: &[(Timestamp, f64)],
) -> String {
    let (from, to) = (from.as_millis(), to.as_millis());
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let (ymax, step) = nice_max(max);
    let last = points.last().map(|p| p.1 as i64).unwrap_or(0);
    let desc = if points.is_empty() {
        "No samples yet.".to_owned()
    } else {
        format!(
            "{} samples; latest {last}, highest {}.",
            points.len(),
            max as i64
        )
    };
    let mut svg = open(id, title, &desc);
    y_axis(&mut svg, ymax, step, y_label);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let span = (to - from).max(1) as f64;
    let x = |t: i64| LEFT + ((t - from) as f64 / span).clamp(0.0, 1.0) * plot_w;
    let at = |t: &Timestamp| x(t.as_millis());
    let y = |v: f64| TOP + plot_h - v / ymax * plot_h;
    // Time ticks every few hours.
    for i in 0..=4 {
        let t = from + (to - from) * i / 4;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"#57606a\">{}</text>",
            x(t),
            H - BOTTOM + 20.0,
            Timestamp::from_millis(t).time_of_day()
        );
    }
    if points.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">no samples yet</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    } else {
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", at(t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2.5\" points=\"{}\"/>",
            COLORS[0],
            path.join(" ")
        );
        if let Some((t, v)) = points.last() {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"/>",
                at(t),
                y(*v),
                COLORS[0]
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">time (UTC)</text></svg>",
        LEFT + plot_w / 2.0,
        H - 8.0
    );
    svg
}

/// Grouped bars per hour: `hours` (start of each hour) and named series of counts.
pub fn hourly_bars(
    id: &str,
    title: &str,
    hours: &[Timestamp],
    series: &[(&str, Vec<u64>)],
) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0) as f64;
    let (ymax, step) = nice_max(max);
    let totals: Vec<String> = series
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.iter().sum::<u64>()))
        .collect();
    let desc = format!("Totals over {} hours — {}.", hours.len(), totals.join(", "));
    let mut svg = open(id, title, &desc);
    y_axis(&mut svg, ymax, step, "per hour");
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = hours.len().max(1) as f64;
    let group = plot_w / n;
    let bar = (group * 0.8 / series.len().max(1) as f64).max(1.0);
    for (i, h) in hours.iter().enumerate() {
        let gx = LEFT + i as f64 * group + group * 0.1;
        for (s, (_, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0) as f64;
            if v > 0.0 {
                let bh = v / ymax * plot_h;
                let _ = write!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{}: {} at {}</title></rect>",
                    gx + s as f64 * bar,
                    TOP + plot_h - bh,
                    COLORS[s % COLORS.len()],
                    esc(series[s].0),
                    v as u64,
                    hour_label(*h)
                );
            }
        }
        let every = (hours.len() / 4).max(1);
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
                gx + group * 0.4,
                H - BOTTOM + 20.0,
                hour_label(*h)
            );
        }
    }
    // Legend.
    let mut lx = 4.0;
    for (s, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"31\" width=\"13\" height=\"13\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"42\" fill=\"#1b1f24\">{}</text>",
            COLORS[s % COLORS.len()],
            lx + 18.0,
            esc(name)
        );
        lx += 36.0 + name.len() as f64 * 8.0;
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">hour (UTC)</text></svg>",
        LEFT + plot_w / 2.0,
        H - 8.0
    );
    svg
}

/// Horizontal bars: one per `(label, count)`.
pub fn categories(id: &str, title: &str, items: &[(String, u64)]) -> String {
    let desc = if items.is_empty() {
        "Nothing to show yet.".to_owned()
    } else {
        items
            .iter()
            .map(|(l, c)| format!("{l}: {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let row = 34.0;
    let top = 36.0;
    let h = top + row * items.len().max(2) as f64 + 8.0;
    let mut svg = open_h(id, title, &desc, h);
    let max = items.iter().map(|i| i.1).max().unwrap_or(0) as f64;
    let label_w = 90.0;
    let left = 4.0;
    let plot_w = W - left - RIGHT - label_w - 40.0;
    if items.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">no live sessions</text>",
            W / 2.0,
            h / 2.0 + 10.0
        );
    }
    for (i, (label, count)) in items.iter().enumerate() {
        let y = top + i as f64 * row;
        let w = if max > 0.0 {
            *count as f64 / max * plot_w
        } else {
            0.0
        };
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#1b1f24\">{}</text>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1b1f24\" font-weight=\"600\">{count}</text>",
            left + label_w - 8.0,
            y + row * 0.6,
            esc(label),
            left + label_w,
            y + row * 0.15,
            row * 0.7,
            COLORS[i % COLORS.len()],
            left + label_w + w + 6.0,
            y + row * 0.6
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_and_escape_labels() {
        let c = categories(
            "c",
            "By <type>",
            &[("<b>".into(), 3), ("mastodon".into(), 5)],
        );
        assert!(c.starts_with("<svg") && c.ends_with("</svg>"));
        assert!(c.contains("&lt;b&gt;") && !c.contains("<b>"));
        let l = line(
            "l",
            "Active",
            "sessions",
            Timestamp::EPOCH,
            Timestamp::from_millis(3_600_000),
            &[
                (Timestamp::EPOCH, 1.0),
                (Timestamp::from_millis(3_600_000), 7.0),
            ],
        );
        assert!(l.contains("<polyline"));
        assert!(l.contains("latest 7"));
        let b = hourly_bars(
            "b",
            "Per hour",
            &[Timestamp::EPOCH, Timestamp::from_millis(3_600_000)],
            &[("logins", vec![1, 2]), ("expiries", vec![0, 4])],
        );
        assert!(b.contains("logins: 3"));
        assert_eq!(nice_max(7.0), (8.0, 2.0));
        assert_eq!(nice_max(0.0), (4.0, 1.0));
    }
}
