//! A report with made-up numbers for the rendering tests.

use std::path::PathBuf;

use crate::machine::Machine;
use crate::matrix::{CellRecord, Operation, Report, WorkloadSummary};
use crate::stats::Spread;

/// Two engines, two worker counts, both operations; the last decrypt cell
/// failed its round trip.
pub(crate) fn sample_report() -> Report {
    let mut cells = Vec::new();
    let mut rate = 300.0;
    for engine in ["threads", "processes"] {
        for workers in [1, 2] {
            for operation in [Operation::Encrypt, Operation::Decrypt] {
                rate += 97.0;
                cells.push(CellRecord {
                    operation,
                    engine: engine.to_owned(),
                    io: "auto".to_owned(),
                    workers,
                    runs: 3,
                    files: 100,
                    bytes: 104_857_600,
                    wall_seconds: Spread::of(&[0.2, 0.21, 0.25]),
                    reported_seconds: Spread::of(&[0.18, 0.19, 0.2]),
                    mb_per_s: Spread {
                        median: rate,
                        min: rate * 0.9,
                        max: rate * 1.05,
                    },
                    files_per_s: Spread::of(&[480.0, 500.0, 510.0]),
                    latency_p50_ms: 1.5,
                    latency_p99_ms: 4.25,
                    cpu_utilisation: 1.8,
                    cpu_per_core: 0.9,
                    peak_rss_kib: 20_480,
                    round_trip_ok: true,
                    round_trip_error: None,
                });
            }
        }
    }
    let last = cells.last_mut().expect("cells were made");
    last.round_trip_ok = false;
    last.round_trip_error = Some("f000001.bin has different bytes".to_owned());
    Report {
        machine: Machine {
            cores: 2,
            cpu_model: "Test CPU".to_owned(),
            aes_ni: true,
            vaes: false,
            avx512f: false,
            workload_filesystem: "ext4".to_owned(),
            scratch_filesystem: "tmpfs".to_owned(),
            kernel: "6.1.0".to_owned(),
        },
        workload: WorkloadSummary {
            path: PathBuf::from("/tmp/workload"),
            files: 100,
            bytes: 104_857_600,
        },
        runs: 3,
        warmup: true,
        cells,
    }
}
