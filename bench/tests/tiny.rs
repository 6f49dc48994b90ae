//! The harness runs end to end on a tiny input and writes a table row for every contender.
//! (Benchmarks are not timed tests: no number is checked, only that one was measured.)

use std::process::Command;

use ratatoskr_bench::servers::CONTENDERS;
use ratatoskr_bench::store_bench::{STORE_CONTENDERS, StoreKind};

/// The second cell of a table row, if the row is the one of `name` (bold or not).
fn rate_cells<'a>(md: &'a str, name: &str) -> Vec<&'a str> {
    md.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // ["", name, rate, …]
            (cells.len() > 3 && cells[1].trim_matches('*') == name).then(|| cells[2])
        })
        .collect()
}

fn is_rate(cell: &str) -> bool {
    !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit() || c == ',')
}

#[test]
fn a_tiny_run_writes_a_row_per_contender_and_a_chart() {
    let dir = std::env::temp_dir().join(format!("ratatoskr-bench-test-{}", std::process::id()));
    let md_path = dir.join("report.md");
    let output = Command::new(env!("CARGO_BIN_EXE_ratatoskr-bench"))
        .args(["--tiny", "--rounds", "2", "--out"])
        .arg(&md_path)
        .output()
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("[1/"), "progress is printed: {stdout}");
    let report = std::fs::read_to_string(&md_path).expect("the report is written");
    // The measured tables come before the prose that describes the contenders.
    let md = report
        .split("## What each contender does")
        .next()
        .unwrap_or_default();
    let svg = std::fs::read_to_string(dir.join("report.svg")).expect("the chart is written");

    for c in CONTENDERS {
        let cells = rate_cells(md, c.name);
        assert_eq!(
            cells.len(),
            2,
            "one read and one write row for {}:\n{md}",
            c.name
        );
        for cell in cells {
            assert!(
                is_rate(cell),
                "{} was measured, got `{cell}`:\n{md}",
                c.name
            );
        }
        assert!(svg.contains(c.name), "{} is in the chart", c.name);
    }
    for (_, name, kind) in STORE_CONTENDERS {
        let cells = rate_cells(md, name);
        assert_eq!(cells.len(), 1, "one store row for {name}:\n{md}");
        // PostgreSQL may be absent where the test runs; then the row must say so.
        let optional = matches!(kind, StoreKind::TieredPostgres | StoreKind::PostgresOnly);
        assert!(
            is_rate(cells[0]) || (optional && cells[0].starts_with("not measured")),
            "{name}: `{}`:\n{md}",
            cells[0]
        );
    }
    assert!(report.contains("cargo run --release -p ratatoskr-bench -- --tiny --rounds 2"));
    assert!(
        md.contains("| rounds: min – max |"),
        "the range over rounds is shown"
    );
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(!md.contains("write check FAILED"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}
