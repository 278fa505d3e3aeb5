//! Memory bound of put and get: with `--max-memory 64MiB`, a 256 MiB file
//! goes in and comes back with a peak RSS under 64 MiB plus a fixed
//! overhead (`OVERHEAD`, measured: see docs/STORE.md "Memory"). The full
//! 4 GiB and 1,000,000-chunk measurements are `benchsuite/store-memory.sh`.
//! A control run then shows that the budget is what bounds it: with slow
//! workers (a test knob) chunks pile up, and a large budget lets far more
//! of them be in memory than a small one.
//! The same bound holds through a store server (`cst://`, the client's
//! peak; its writer queues at most a few 256 KiB blocks per object).
//! `RUSAGE_CHILDREN` is the peak of every child this process waited for:
//! the control runs first in its test, and nextest runs each test in a
//! process of its own.

mod common;
mod store_support;

use std::fs;

use common::*;
use store_support::*;

/// The budget given to put and get.
const BUDGET_MIB: u64 = 64;
/// Fixed overhead allowed above the budget: the binary, SQLite's page
/// cache (8 MiB), the chunker's buffer (one maximum chunk), the pool's
/// queued tasks and allocator slack.
const OVERHEAD_MIB: u64 = 64;

fn children_max_rss_kib() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass; RUSAGE_CHILDREN covers
    // every child this process has waited for.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: initialised by getrusage above.
    unsafe { usage.assume_init() }.ru_maxrss as u64
}

/// A 256 MiB file put into and got back from a store of `kind` with
/// `--max-memory 64MiB`: the peak RSS of the commands stays under the
/// budget plus [`OVERHEAD_MIB`].
fn put_and_get_stay_under_the_budget(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("big.bin");
    write_random_file(&src, 256 * MIB, 99, 0o644);
    let budget = format!("{BUDGET_MIB}MiB");
    let mut put = s.cmd("put");
    put.args(["--workers", "8", "--max-memory", &budget])
        .arg(&src);
    // Flags are global to `store`, so they may follow the subcommand.
    run(&mut put).success();
    let after_put = children_max_rss_kib();
    let dest = s.ws.path("out");
    let mut get = s.cmd("get");
    get.args(["--workers", "8", "--max-memory", &budget, "big.bin"])
        .arg(&dest);
    run(&mut get).success();
    let after_get = children_max_rss_kib();
    assert_eq!(hash_file(&dest.join("big.bin")), hash_file(&src));
    fs::remove_file(&src).unwrap();
    eprintln!(
        "peak RSS: put {} MiB, put+get {} MiB",
        after_put / 1024,
        after_get / 1024
    );
    let bound = (BUDGET_MIB + OVERHEAD_MIB) * 1024;
    assert!(
        after_get < bound,
        "peak RSS {after_get} KiB over {bound} KiB"
    );
}

#[test]
fn put_and_get_of_a_256_mib_file_through_a_store_server_stay_under_the_budget() {
    put_and_get_stay_under_the_budget(Kind::Remote);
}

#[test]
fn put_and_get_of_a_256_mib_file_stay_under_the_budget() {
    put_and_get_stay_under_the_budget(Kind::Local);
    let budget = format!("{BUDGET_MIB}MiB");
    // The control. Workers keep up with the reader on their own, so
    // nothing waits and the budget never binds; slowed down (500 ms a
    // chunk, 8 workers: 64 MiB/s), they leave chunks queued behind them,
    // and only the budget limits how many. Large chunks (4 MiB on average)
    // make the difference plain: the pool's 16 queued and 8 running tasks
    // hold ~100 MiB of chunks (and as much again of sealed output) when
    // the budget allows it, against ~32 MiB under 64 MiB. ru_maxrss only
    // grows, so the small budget runs first.
    let big = StoreWs::new(&[
        "--chunk-min",
        "1MiB",
        "--chunk-avg",
        "4MiB",
        "--chunk-max",
        "16MiB",
    ]);
    let src = big.ws.path("control.bin");
    write_random_file(&src, 256 * MIB, 7, 0o644);
    let put_with = |budget: &str| {
        let mut put = big.cmd("put");
        put.args(["--workers", "8", "--force-read", "--max-memory", budget])
            .env("CRYPTSTREAM_DEBUG_STORE_TASK_DELAY_MS", "500")
            .arg(&src);
        run(&mut put).success();
        children_max_rss_kib()
    };
    let small = put_with(&budget);
    let large = put_with("2GiB");
    eprintln!(
        "slow workers: peak RSS {} MiB with {budget}, {} MiB with 2GiB",
        small / 1024,
        large / 1024
    );
    assert!(
        large > small + 32 * 1024,
        "a 2GiB budget held no more than {budget} did ({large} KiB vs {small} KiB): \
         --max-memory bounds nothing"
    );
}
