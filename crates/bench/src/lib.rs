//! Benchmarks the `cryptstream` binary over a matrix of configurations.
//!
//! A [`BenchConfig`] names a workload folder (made, if needed, by
//! [`TempWorkload`] with `cryptstream-workload`), the engines, I/O
//! strategies and worker counts to try, and how many runs to record.
//! [`run_matrix`] runs the real binary as a child process for every cell of
//! that matrix, encrypting the workload and then decrypting the result, and
//! measures each child from the outside ([`run_child`]: wall time, and CPU
//! time and peak memory from `wait4`) and from the inside (the binary's
//! `--json` summary: per-file latencies). After every decrypt it checks the
//! output against a [`TreePrint`] of the workload (paths, BLAKE3 hashes,
//! modes). Each operation of each cell becomes a [`CellRecord`] of medians
//! and [`Spread`]s, gathered in a serialisable [`Report`] together with the
//! [`Machine`] it ran on.
//!
//! A report is then shown three ways: [`render_table`] for a terminal, JSON
//! through `serde`, and [`render_chart`], an SVG bar chart of MB/s per
//! configuration that a person can read at a glance.
//!
//! [`run_net_bench`] (`bench net`) measures the network transfer instead:
//! a `serve` child and 1, 10, 50... `send` children at once on 127.0.0.1,
//! each measured the same way, in a [`NetReport`] ([`render_net_table`]).

#![deny(missing_docs)]

mod chart;
mod child;
mod error;
mod machine;
mod matrix;
mod net;
mod stats;
mod table;
#[cfg(test)]
mod testdata;
mod tree;

pub use chart::render_chart;
pub use child::{run_child, spawn_child, spawn_child_reporting, ChildRun, Spawned};
pub use error::BenchError;
pub use machine::Machine;
pub use matrix::{
    run_matrix, run_matrix_with, BenchConfig, CellConfig, CellRecord, Operation, Report, Step,
    TempWorkload, WorkloadSummary, DEFAULT_ENGINE, DEFAULT_IO,
};
pub use net::{render_net_table, run_net_bench, NetBenchConfig, NetReport, NetRow};
pub use stats::{median, percentile, Spread};
pub use table::render_table;
pub use tree::TreePrint;
