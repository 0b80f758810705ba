//! `federact bench ledger --quick` on a tiny chain (one validator process,
//! one gateway process, two authors, two short rate steps) writes a report
//! whose structure is complete and whose figures are positive and
//! consistent.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Rows of a CSV file written by the report (no quoted cells in these), by header.
fn csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("a header line")
        .split(',')
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{}: {l}", path.display());
            header
                .iter()
                .cloned()
                .zip(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &HashMap<String, String>, col: &str) -> f64 {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{col} in {row:?}: {e}"))
}

#[test]
fn quick_ledger_bench_writes_a_consistent_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_federact"))
        .args([
            "bench",
            "ledger",
            "--quick",
            "--validators",
            "1",
            "--authors",
            "2",
            "--block",
            "200",
            "--secs",
            "1",
            "--rates",
            "100,300",
            "--reads",
            "300",
            "--timeout-s",
            "5",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run federact bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {stderr}");

    let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    for needle in [
        "# federact bench ledger",
        "- command: `federact bench ledger --quick",
        "- machine: ",
        "cores available",
        "## Transactions",
        "## Resources per node role",
        "## Reads",
        "Peak committed throughput",
        "![",
    ] {
        assert!(
            summary.contains(needle),
            "summary lacks {needle:?}:\n{summary}"
        );
    }

    let steps = csv(&out.join("ledger.csv"));
    assert_eq!(steps.len(), 2, "one row per offered rate");
    for (row, rate) in steps.iter().zip([100.0, 300.0]) {
        assert_eq!(num(row, "offered tx/s"), rate);
        let (submitted, committed) = (num(row, "submitted"), num(row, "committed"));
        assert!(committed > 0.0 && committed <= submitted, "{row:?}");
        assert!(num(row, "committed tx/s") > 0.0, "{row:?}");
        let (p50, p99, max) = (num(row, "p50 ms"), num(row, "p99 ms"), num(row, "max ms"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{row:?}");
        assert!(num(row, "avg ms") > 0.0, "{row:?}");
        assert!(
            num(row, "CPU ms per committed tx (all processes)") > 0.0,
            "{row:?}"
        );
    }

    let roles = csv(&out.join("resources.csv"));
    let names: Vec<&str> = roles.iter().map(|r| r["role"].as_str()).collect();
    assert_eq!(names, vec!["driver", "gateway", "validator"], "{roles:?}");
    for r in &roles {
        assert!(num(r, "peak RSS MiB (largest process)") > 0.0, "{r:?}");
        assert!(
            num(r, "max CPU % per process (of one core)") >= 0.0,
            "{r:?}"
        );
    }

    let reads = csv(&out.join("reads.csv"));
    assert_eq!(reads.len(), 3);
    for r in &reads {
        assert!(num(r, "reads/s") > 0.0, "{r:?}");
        assert!(num(r, "p50 µs") <= num(r, "p99 µs"), "{r:?}");
    }

    for plot in ["throughput.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).expect(plot);
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{plot}"
        );
    }
}

/// `federact bench migration --experiment clouds` on two 1-validator
/// clouds: every migration started completed, the report has a row per
/// (cloud count, scope) with p50 ≤ p99, and the blocks read back from the
/// stores are consistent (inter migrations committed consortium blocks;
/// each migration's records fill at least one local block).
#[test]
fn clouds_experiment_reports_delay_and_blocks_per_cloud_count() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_federact"))
        .args([
            "bench",
            "migration",
            "--quick",
            "--experiment",
            "clouds",
            "--cloud-counts",
            "2",
            "--local-validators",
            "1",
            "--inter-validators",
            "1",
            "--rate",
            "4",
            "--secs",
            "1",
            "--drain-secs",
            "60",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("federact runs");
    assert!(
        run.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("![Delay vs clouds](delay_vs_clouds.svg)"),
        "{summary}"
    );
    assert!(out.join("blocks_vs_clouds.svg").exists());
    let rows = csv(&out.join("delay_vs_clouds.csv"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(num(row, "clouds"), 2.0);
        let started = num(row, "started");
        assert!(started >= 1.0, "{row:?}");
        assert_eq!(num(row, "completed"), started, "{row:?}");
        assert!(num(row, "p50 ms") > 0.0 && num(row, "p50 ms") <= num(row, "p99 ms"));
        assert!(num(row, "local blocks") >= 1.0, "{row:?}");
    }
    let inter = rows
        .iter()
        .find(|r| r["scope"] == "inter")
        .expect("an inter row");
    assert!(num(inter, "consortium blocks") >= 1.0, "{inter:?}");
}
