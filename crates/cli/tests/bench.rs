//! `cryptstream bench`: runs the real binary over a small matrix and writes
//! a table, a JSON report and an SVG chart that agree with each other.

use std::fs;

use assert_cmd::prelude::*;
use serde_json::Value;

mod common;
use common::{cryptstream, list_dir, run, snapshot};

/// The numeric fields every cell of the JSON report has.
const NUMBER_FIELDS: &[&str] = &[
    "workers",
    "runs",
    "files",
    "bytes",
    "latency_p50_ms",
    "latency_p99_ms",
    "cpu_utilisation",
    "cpu_per_core",
    "peak_rss_kib",
];

/// The fields that hold a median, min and max.
const SPREAD_FIELDS: &[&str] = &[
    "wall_seconds",
    "reported_seconds",
    "mb_per_s",
    "files_per_s",
];

fn has_class(node: &roxmltree::Node<'_, '_>, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split_whitespace().any(|part| part == class))
}

/// The `data-series` names of the chart's series, in order.
fn chart_series(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    for class in ["title", "axis-title", "legend"] {
        assert!(
            doc.descendants().any(|n| has_class(&n, class)),
            "the chart has a {class}"
        );
    }
    doc.descendants()
        .filter(|n| has_class(n, "series"))
        .filter_map(|n| n.attribute("data-series").map(str::to_owned))
        .collect()
}

#[test]
fn generated_workload_matrix_writes_table_json_and_chart() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let scratch = tmp.path().join("scratch");
    let json = tmp.path().join("out.json");
    let svg = tmp.path().join("out.svg");
    let mut cmd = cryptstream();
    cmd.arg("bench")
        .args([
            "--count",
            "20",
            "--size",
            "4KiB",
            "--workers",
            "1,2",
            "--runs",
            "1",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&svg)
        .arg("--scratch")
        .arg(&scratch);
    let stdout = run(&mut cmd).success().stdout_text();
    assert!(stdout.contains("machine: "), "{stdout}");
    assert!(stdout.contains("operation"), "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("encrypt") || l.starts_with("decrypt"))
            .count(),
        4,
        "{stdout}"
    );

    let report: Value = serde_json::from_str(&fs::read_to_string(&json).expect("JSON written"))
        .expect("valid JSON");
    let machine = &report["machine"];
    assert!(machine["cores"].as_u64().is_some_and(|c| c >= 1));
    for field in [
        "cpu_model",
        "workload_filesystem",
        "scratch_filesystem",
        "kernel",
    ] {
        assert!(machine[field].is_string(), "machine.{field}");
    }
    for field in ["aes_ni", "vaes", "avx512f"] {
        assert!(machine[field].is_boolean(), "machine.{field}");
    }
    assert_eq!(report["workload"]["files"], 20);
    assert_eq!(report["workload"]["bytes"], 20 * 4096);

    let cells = report["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 4, "one record per operation and worker count");
    let mut seen = Vec::new();
    for cell in cells {
        for field in NUMBER_FIELDS {
            assert!(cell[field].is_number(), "{field} in {cell}");
        }
        for field in SPREAD_FIELDS {
            for part in ["median", "min", "max"] {
                assert!(cell[field][part].is_number(), "{field}.{part} in {cell}");
            }
        }
        assert!(cell["mb_per_s"]["median"].as_f64().is_some_and(|v| v > 0.0));
        assert_eq!(cell["engine"], "threads");
        assert_eq!(cell["io"], "auto");
        assert_eq!(cell["files"], 20);
        assert_eq!(cell["runs"], 1);
        assert_eq!(cell["round_trip_ok"], true, "{cell}");
        assert!(cell["round_trip_error"].is_null());
        seen.push((
            cell["operation"].as_str().expect("operation").to_owned(),
            cell["workers"].as_u64().expect("workers"),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("decrypt".to_owned(), 1),
            ("decrypt".to_owned(), 2),
            ("encrypt".to_owned(), 1),
            ("encrypt".to_owned(), 2)
        ]
    );

    let series = chart_series(&fs::read_to_string(&svg).expect("chart written"));
    assert_eq!(series, ["threads/auto/1", "threads/auto/2"]);
    // The generated workload, key and outputs are gone.
    assert!(list_dir(&scratch).is_empty(), "scratch left behind");
}

#[test]
fn given_workload_is_left_as_it_was() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let workload = tmp.path().join("work");
    cryptstream()
        .arg("gen")
        .arg(&workload)
        .args([
            "--count",
            "6",
            "--size-dist",
            "uniform:0..70KiB",
            "--depth",
            "1",
            "--quiet",
        ])
        .assert()
        .success();
    let before = snapshot(&workload);
    let scratch = tmp.path().join("scratch");
    let mut cmd = cryptstream();
    cmd.arg("bench")
        .arg("--workload")
        .arg(&workload)
        .args(["--workers", "2", "--runs", "2", "--no-warmup"])
        .arg("--scratch")
        .arg(&scratch);
    let stdout = run(&mut cmd).success().stdout_text();
    assert!(stdout.contains("6 files"), "{stdout}");
    assert_eq!(snapshot(&workload), before);
    assert!(list_dir(&scratch).is_empty());
}

#[test]
fn conflicting_and_invalid_options_are_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cmd = cryptstream();
    cmd.arg("bench")
        .arg("--workload")
        .arg(tmp.path())
        .args(["--count", "5"]);
    let out = run(&mut cmd);
    assert!(!out.status.success(), "{}", out.stderr);
    out.stderr_has("cannot be used with");
    cryptstream()
        .args(["bench", "--engines", "fibers"])
        .assert()
        .failure();
    cryptstream()
        .args(["bench", "--runs", "0"])
        .assert()
        .failure();
    fs::write(tmp.path().join("input.bin"), b"data").expect("write");
    let mut cmd = cryptstream();
    cmd.arg("bench")
        .arg("--workload")
        .arg(tmp.path())
        .arg("--scratch")
        .arg(tmp.path().join("inside"));
    let out = run(&mut cmd);
    assert!(!out.status.success(), "{}", out.stderr);
    out.stderr_has("inside the workload");
    assert!(!tmp.path().join("inside").exists());

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let mut cmd = cryptstream();
    cmd.arg("bench")
        .arg("--workload")
        .arg(&empty)
        .arg("--scratch")
        .arg(tmp.path().join("scratch"));
    let out = run(&mut cmd);
    assert!(!out.status.success(), "{}", out.stderr);
    out.stderr_has("holds no files");
}
