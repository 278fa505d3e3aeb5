//! Generates trees of files to benchmark and test cryptstream on.
//!
//! A [`WorkloadSpec`] says everything about a workload: how many files, how
//! their sizes are spread ([`SizeDist`], with sizes read by [`parse_size`]),
//! what their bytes look like ([`Content`]), how deep the folders go, and a
//! seed. [`generate`] writes it into a folder on several threads and returns
//! a [`GenReport`] (files, bytes, time, rate).
//!
//! Nothing depends on the order in which threads run: the size of file `i`
//! is drawn from a pseudo-random stream keyed by `(seed, i)`, and each
//! 1 MiB block `b` of its bytes from a stream keyed by `(seed, i, b)`
//! (xoshiro256++ generators seeded through BLAKE3, see the `rng` module).
//! So the same spec always gives the same names, sizes and bytes, any block
//! can be made on any thread, and a large file is written by several
//! threads at once. Random content costs about a quarter of a second of
//! CPU per gigabyte, so generating a random workload is limited by the file
//! system, not by this crate; text costs more (a few hundred MB/s per core).

#![deny(missing_docs)]

mod content;
mod digest;
mod dist;
mod generate;
mod rng;
mod size;
mod tree;
mod vocab;

pub use content::{Content, ContentError};
pub use digest::tree_digest;
pub use dist::{DistError, SizeDist, LOGNORMAL_MAX_DEVIATIONS, LOGNORMAL_SIGMA};
pub use generate::{generate, Existing, GenError, GenReport, WorkloadSpec, BLOCK_SIZE};
pub use size::{format_size, human_size, parse_size, SizeError};
pub use tree::MAX_DEPTH;
