//! The SVG chart: one horizontal bar panel per scenario.

use std::fmt::Write as _;

use super::cells::esc;
use super::{Report, Scenario, secs};
use crate::options::Options;
use crate::servers::{Contender, Kind};
use crate::stats::{Summary, thousands};

impl Report {
    /// Three horizontal bar panels: reads, writes, store-level writes.
    pub fn svg(&self, o: &Options) -> String {
        let bars = |scenario: Scenario| -> Vec<Bar> {
            self.http
                .iter()
                .map(|r| Bar::new(r.contender.name, r.get(scenario), colour(&r.contender)))
                .collect()
        };
        let store: Vec<Bar> = self
            .store
            .iter()
            .map(|r| {
                let c = if r.id.contains("tiered") {
                    RATATOSKR
                } else if r.id == "store-redis" {
                    RATATOSKR_LIGHT
                } else {
                    REFERENCE
                };
                Bar::new(r.name, &r.result, c)
            })
            .collect();
        let panels = [
            (
                "HTTP session reads (GET /read), requests/s",
                bars(Scenario::Read),
            ),
            (
                "HTTP session writes (POST /write), requests/s",
                bars(Scenario::Write),
            ),
            (
                "HTTP logins (GET /visit + POST /login), logins/s",
                bars(Scenario::Login),
            ),
            ("Store-level writes, no HTTP, writes/s", store),
        ];
        let width = 960.0;
        let label_w = 330.0;
        let bar_max = width - label_w - 130.0;
        let row_h = 26.0;
        let mut y = 100.0;
        let mut body = String::new();
        let _ = writeln!(
            body,
            r#"<text x="16" y="24" class="t">Ratatoskr and its peers: throughput (higher is better)</text>"#
        );
        let _ = writeln!(
            body,
            r#"<text x="16" y="44" class="s">{}; {} cores; {} HTTP connections, {} store writers; {} per scenario{}; {}</text>"#,
            esc(&self.date),
            self.machine.cores,
            o.connections,
            o.store_tasks,
            secs(o.duration),
            if o.rounds > 1 {
                format!(", median of {} rounds", o.rounds)
            } else {
                String::new()
            },
            if o.tiny {
                "--tiny run: not a measurement"
            } else {
                self.machine.profile
            }
        );
        for (title, bars) in &panels {
            let _ = writeln!(
                body,
                r#"<text x="16" y="{:.0}" class="h">{}</text>"#,
                y,
                esc(title)
            );
            y += 14.0;
            let max = bars.iter().filter_map(|b| b.value).fold(0.0_f64, f64::max);
            for b in bars {
                let ty = y + row_h * 0.5 + 4.0;
                let _ = writeln!(
                    body,
                    r#"<text x="{:.0}" y="{ty:.0}" class="l" text-anchor="end">{}</text>"#,
                    label_w - 10.0,
                    esc(b.label)
                );
                match b.value {
                    Some(v) if max > 0.0 => {
                        let w = (v / max * bar_max).max(1.0);
                        let _ = writeln!(
                            body,
                            r#"<rect x="{label_w:.0}" y="{:.1}" width="{w:.1}" height="{:.0}" rx="2" fill="{}"/>"#,
                            y + 4.0,
                            row_h - 8.0,
                            b.colour
                        );
                        let _ = writeln!(
                            body,
                            r#"<text x="{:.1}" y="{ty:.0}" class="v">{}</text>"#,
                            label_w + w + 6.0,
                            thousands(v)
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            body,
                            r#"<text x="{label_w:.0}" y="{ty:.0}" class="n">not measured</text>"#
                        );
                    }
                }
                y += row_h;
            }
            y += 30.0;
        }
        let height = y;
        let legend_y = 66.0;
        let legend = [
            (RATATOSKR, "Ratatoskr"),
            (RATATOSKR_LIGHT, "Ratatoskr, Redis only"),
            (PEER, "peers"),
            (REFERENCE, "no sessions / reference"),
        ];
        let mut lg = String::new();
        let mut x = 16.0;
        for (c, name) in legend {
            let _ = writeln!(
                lg,
                r#"<rect x="{x:.0}" y="{:.0}" width="12" height="12" fill="{c}"/><text x="{:.0}" y="{legend_y:.0}" class="l">{name}</text>"#,
                legend_y - 10.0,
                x + 17.0
            );
            x += 34.0 + name.len() as f64 * 7.0;
        }
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<style>.t{{font-size:17px;font-weight:bold;fill:#111}} .s{{font-size:12px;fill:#555}} .h{{font-size:15px;font-weight:bold;fill:#222}} .l{{font-size:12.5px;fill:#333}} .v{{font-size:12px;fill:#222}} .n{{font-size:12px;fill:#a33;font-style:italic}}</style>
<rect width="100%" height="100%" fill="#fff"/>
{lg}{body}</svg>
"##
        )
    }
}

const RATATOSKR: &str = "#1f6fb2";
const RATATOSKR_LIGHT: &str = "#6fa8dc";
const PEER: &str = "#e08a2c";
const REFERENCE: &str = "#b0b0b0";

fn colour(c: &Contender) -> &'static str {
    match c.kind {
        Kind::RatatoskrTiered | Kind::RatatoskrTieredPostgres => RATATOSKR,
        Kind::RatatoskrRedis => RATATOSKR_LIGHT,
        Kind::TowerSessions | Kind::ActixSession => PEER,
        Kind::BareAxum | Kind::BareActix => REFERENCE,
    }
}

struct Bar {
    label: &'static str,
    value: Option<f64>,
    colour: &'static str,
}

impl Bar {
    fn new(label: &'static str, r: &Result<Summary, String>, colour: &'static str) -> Bar {
        Bar {
            label,
            value: r.as_ref().ok().map(|s| s.per_sec),
            colour,
        }
    }
}
