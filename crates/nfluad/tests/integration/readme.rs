//! The README's "Writing a filter" walk-through, run as a reader would paste it (test, hook,
//! reload, repl in a namespace of its own), so that it keeps working. Needs root.

use std::process::Command;

use crate::util::{bin, text};

#[test]
fn the_writing_a_filter_walk_through_runs_as_written() {
    if !crate::util::have_root("the_writing_a_filter_walk_through_runs_as_written") {
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let section = &readme[readme.find("## Writing a filter").expect("the walk-through's section")..];
    let start = section.find("```sh\n").expect("its commands") + 6;
    let block = &section[start..start + section[start..].find("```\n").expect("end of the commands")];
    // The binaries under test instead of a release build; a namespace name of this run's own;
    // `sudo` as a pass-through (the tests already run as root).
    let bins = bin("nfluad").parent().expect("bin dir").to_owned();
    let ns = format!("nflua-walk-{}", std::process::id());
    let mut lines = block.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("cargo build --release")), "{block}");
    let script: String = lines.map(|l| format!("{}\n", l.replace(" walk", &format!(" {ns}")))).collect();
    let dir = std::env::temp_dir().join(format!("nflua-walk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").expect("sudo");
    Command::new("chmod").arg("+x").arg(dir.join("sudo")).status().expect("chmod");
    let path = format!("{}:{}:{}", dir.display(), bins.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("timeout")
        .args(["120", "bash", "-euo", "pipefail", "-c", &script])
        .current_dir(&dir)
        .env("PATH", path)
        .output()
        .expect("bash");
    // Whatever happened, nothing of the run stays behind.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("ip netns pids {ns} | xargs -r kill; ip netns del {ns}"))
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "the walk-through failed: {stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("4 packets: accept 2, drop 2; errors 0"), "{stdout}");
    assert!(stdout.contains("4 packets: accept 1, drop 3; errors 0"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "true"), "the repl shows the new code: {stdout}");
}
