//! Table cells.

use crate::options::Options;
use crate::stats::{Summary, thousands};

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(super) fn range_head(o: &Options) -> &'static str {
    if o.rounds > 1 {
        " rounds: min – max |"
    } else {
        ""
    }
}

pub(super) fn range_rule(o: &Options) -> &'static str {
    if o.rounds > 1 { "---:|" } else { "" }
}

pub(super) fn range_cell(o: &Options, s: &Summary) -> String {
    match s.range {
        Some((lo, hi)) if o.rounds > 1 => format!(" {} – {} |", thousands(lo), thousands(hi)),
        _ if o.rounds > 1 => " – |".into(),
        _ => String::new(),
    }
}

pub(super) fn load(s: &Summary) -> String {
    s.other_load
        .map_or("–".into(), |l| format!("{:.0} %", l * 100.0))
}

pub(super) fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = s.replace('|', "/");
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}
