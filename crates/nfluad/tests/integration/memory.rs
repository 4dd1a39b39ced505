//! `maxalloc` covers what a state holds outside its Lua heap: `data` buffers are refused past it
//! (the daemon's RSS does not grow), and LIST shows them while they are held.

use crate::util::Daemon;

/// The daemon's resident set, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn curralloc(d: &Daemon, name: &str) -> u64 {
    let list: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["list", "--json"])).unwrap();
    let state = list.as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    state["curralloc"].as_u64().unwrap()
}

#[test]
fn data_buffers_are_refused_past_maxalloc() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "m", "--memory", "65536"]);
    d.execute("m", "local d = data.new(16)").unwrap();
    let before = rss(d.pid());
    let err = d
        .execute("m", "keep = {} for i = 1, 20 do keep[i] = data.new(40000000) end")
        .expect_err("20 buffers of 40 MB in 64 KiB");
    assert!(err.to_string().contains("not enough memory"), "{err}");
    let growth = rss(d.pid()).saturating_sub(before);
    println!("RSS growth after the refused data.new loop: {growth} bytes");
    assert!(growth < 1 << 20, "RSS grew by {growth} bytes");
    assert!(curralloc(&d, "m") <= 65536);
}

#[test]
fn list_shows_buffers_while_held() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "big", "--memory", "1048576"]);
    d.execute("big", "local d = data.new(0) d = nil collectgarbage() collectgarbage()").unwrap();
    let before = curralloc(&d, "big");
    d.execute("big", "keep = {data.new(10000), data.new(10000), data.new(10000)}").unwrap();
    let held = curralloc(&d, "big");
    println!("curralloc: {before} before, {held} with 3 buffers of 10000 bytes");
    assert!(held >= before + 30_000 && held < before + 32_000, "before {before}, held {held}");
    d.execute("big", "keep = nil collectgarbage() collectgarbage()").unwrap();
    let after = curralloc(&d, "big");
    assert!(after < before + 1000, "before {before}, after {after}");
}
