//! `store shell` driven through piped stdin: a background put, `jobs` and
//! `list` while it runs, and `exit` waiting for it.

mod common;
mod store_support;

use std::fs;

use common::*;
use store_support::*;

#[test]
fn shell_runs_put_in_the_background_and_exit_waits_for_it() {
    let s = StoreWs::new(SMALL_CHUNKS);
    let src = s.ws.path("src/shelltree");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        write_random_file(&src.join(format!("f{i}")), 2 * MIB, i, 0o644);
    }
    let script = format!("put {}\njobs\nlist\nnot-a-command\nexit\n", src.display());
    let mut cmd = s.cmd("shell");
    // Slow enough that `jobs` and `list` run while the put is in flight.
    cmd.env("CRYPTSTREAM_DEBUG_STORE_DELAY_MS", "5");
    let out = run_with_stdin(&mut cmd, Some(script.into_bytes()));
    out.success();
    let stdout = out.stdout_text();
    assert!(stdout.contains("[1] started: put"), "{stdout}");
    assert!(
        stdout.contains("[1] running"),
        "jobs while the put runs: {stdout}"
    );
    assert!(
        stdout.contains("ID ") && stdout.contains("NAME"),
        "list answered: {stdout}"
    );
    out.stderr_has("unrecognized subcommand 'not-a-command'")
        .stderr_has("waiting for 1 running jobs")
        .stderr_has("[1] done");
    // exit waited: everything is stored.
    let list = s.run("list", &[&"--json"]).success().json();
    assert_eq!(list.as_array().unwrap().len(), 7, "{list}");
    let dest = s.ws.path("back");
    s.run("get", &[&"shelltree", &dest]).success();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("shelltree")));
}
