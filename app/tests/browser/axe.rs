//! axe-core's WCAG 2.1 A and AA rules, run inside the page a [`Browser`] shows.
//!
//! axe-core is the npm package `axe-core`; `scripts/test.sh` installs it into
//! `target/npm/node_modules/axe-core` (git-ignored). `AXE_CORE_JS` points at another copy of
//! `axe.min.js`. Its absence is a test failure, never a skip.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::json;

use crate::webdriver::Browser;

/// The version `scripts/test.sh` installs (the rules change between versions).
pub const AXE_VERSION: &str = "4.14.1";

/// The rule sets checked: WCAG 2.0 and 2.1, levels A and AA.
const TAGS: [&str; 4] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

fn axe_path() -> PathBuf {
    std::env::var_os("AXE_CORE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/npm/node_modules/axe-core/axe.min.js")
        })
}

/// axe.min.js, read once.
fn axe_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let path = axe_path();
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "axe-core is missing ({}: {e}). scripts/test.sh installs it; by hand: \
                 npm install --prefix target/npm --no-save axe-core@{AXE_VERSION}",
                path.display()
            )
        })
    })
}

/// One rule that failed on a page, with the elements that fail it.
#[derive(Debug, Deserialize)]
pub struct Violation {
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: Option<String>,
    pub help: String,
    #[serde(rename = "helpUrl")]
    pub help_url: String,
    /// Each failing element: its CSS path and axe's summary of what to fix.
    pub nodes: Vec<String>,
}

impl Violation {
    /// Serious and critical violations fail the test.
    pub fn blocks(&self) -> bool {
        matches!(self.impact.as_deref(), Some("serious" | "critical"))
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let impact = self.impact.as_deref().unwrap_or("unknown");
        writeln!(
            f,
            "  [{impact}] {}: {} ({})",
            self.id, self.help, self.help_url
        )?;
        for node in &self.nodes {
            writeln!(f, "      {}", node.replace('\n', " "))?;
        }
        Ok(())
    }
}

/// Inject axe-core into the current page (once per document) and run the WCAG 2.1 A/AA rules.
pub async fn violations(b: &Browser) -> Vec<Violation> {
    if b.exec("return typeof window.axe").await != "object" {
        b.exec(axe_source()).await;
        let version = b.exec("return axe.version").await;
        assert_eq!(
            version,
            AXE_VERSION,
            "axe-core {version} at {}; the test's findings are for {AXE_VERSION} \
             (scripts/test.sh installs it)",
            axe_path().display()
        );
    }
    let script = r#"
        const [tags, done] = arguments;
        axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] })
            .then(r => done({ violations: r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                nodes: v.nodes.map(n => n.target.join(' ') + ' — ' + (n.failureSummary || '')),
            })) }))
            .catch(e => done({ error: String(e) }));
    "#;
    let result = b.exec_async(script, vec![json!(TAGS)]).await;
    if let Some(error) = result.get("error") {
        panic!("axe-core failed on {}: {error}", b.url().await);
    }
    serde_json::from_value(result["violations"].clone()).expect("axe's violations")
}
