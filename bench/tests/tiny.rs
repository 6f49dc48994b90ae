//! The harness runs end to end on a tiny input and writes a table row for every contender.
//! (Benchmarks are not timed tests: no speed is checked, only that each contender was measured:
//! a positive rate, no failed request, and every row present, PostgreSQL's included.)

use std::process::Command;

use ratatoskr_bench::servers::CONTENDERS;
use ratatoskr_bench::store_bench::{STORE_CONTENDERS, StoreKind};

/// The cells after the name of the table rows of `name` (bold or not): rate, ratio, p50, p99,
/// errors, other load, range.
fn rows<'a>(md: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    md.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // ["", name, rate, …, ""]
            (cells.len() > 3 && cells[1].trim_matches('*') == name)
                .then(|| cells[2..cells.len() - 1].to_vec())
        })
        .collect()
}

/// A rate cell (`12,345`) as a number; `None` if it is not one.
fn rate(cell: &str) -> Option<u64> {
    if cell.is_empty() || !cell.chars().all(|c| c.is_ascii_digit() || c == ',') {
        return None;
    }
    cell.replace(',', "").parse().ok()
}

/// A row was measured: a positive rate and no failed operation. Anything else fails the test
/// with the row, so a contender that errors or stalls is never reported as benchmarked.
fn assert_measured(what: &str, cells: &[&str], md: &str) {
    let Some(per_sec) = rate(cells[0]) else {
        panic!("{what} was not measured: `{}`\n{md}", cells.join(" | "));
    };
    assert!(per_sec > 0, "{what}: a rate of 0\n{md}");
    assert_eq!(cells[4], "0", "{what}: failed requests\n{md}");
}

#[test]
fn the_row_checks_refuse_zero_rates_errors_and_unmeasured_rows() {
    let md = "| a | 1,200 | 100 % | 0.3 ms | 0.6 ms | 0 | 0 % | 1 – 2 |\n\
              | b | 0 | 0 % | 0.3 ms | 0.6 ms | 0 | 0 % | 0 – 0 |\n\
              | c | 900 | 75 % | 0.3 ms | 0.6 ms | 3 | 0 % | 1 – 2 |\n\
              | d | not measured: connection refused | | | | | |\n";
    assert_measured("a", &rows(md, "a")[0], md);
    for bad in ["b", "c", "d"] {
        let cells = rows(md, bad)[0].clone();
        let caught = std::panic::catch_unwind(|| assert_measured(bad, &cells, md));
        assert!(caught.is_err(), "row {bad} passed the check");
    }
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
        // Rate tables have seven cells after the name; the memory table one.
        let (scenarios, memory): (Vec<_>, Vec<_>) = rows(md, c.name)
            .into_iter()
            .partition(|cells| cells.len() > 1);
        assert_eq!(
            scenarios.len(),
            3,
            "a read, a write and a login row for {}:\n{md}",
            c.name
        );
        for cells in scenarios {
            assert_measured(c.name, &cells, md);
        }
        if c.has_sessions() {
            assert_eq!(memory.len(), 1, "a Redis memory row for {}:\n{md}", c.name);
            let bytes = memory[0][0];
            assert!(
                bytes.parse::<u64>().is_ok_and(|b| b > 0),
                "{}: Redis bytes per session not measured: `{bytes}`\n{md}",
                c.name
            );
        } else {
            assert!(memory.is_empty(), "{} keeps no sessions:\n{md}", c.name);
        }
        assert!(svg.contains(c.name), "{} is in the chart", c.name);
    }
    assert!(
        md.contains("## Targets (issue 10)"),
        "the targets are worked out:\n{md}"
    );
    for (_, name, kind) in STORE_CONTENDERS {
        let rows = rows(md, name);
        assert_eq!(rows.len(), 1, "one store row for {name}:\n{md}");
        // PostgreSQL is a prerequisite like Redis: a row it could not measure fails the test.
        if matches!(kind, StoreKind::TieredPostgres | StoreKind::PostgresOnly) {
            assert!(
                !rows[0][0].starts_with("not measured"),
                "PostgreSQL is running on 127.0.0.1:5432 (scripts/test.sh starts it): {name}: `{}`",
                rows[0][0]
            );
        }
        assert_measured(name, &rows[0], md);
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
