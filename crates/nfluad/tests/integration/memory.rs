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

/// DATA queued behind a running entry counts in the state's memory while it waits: LIST shows
/// it, a message past `maxalloc` is refused with the memory error, and delivery gives it back.
#[test]
fn pending_messages_count_against_maxalloc() {
    let d = Daemon::start_with(&["--max-call-ms", "1500"]);
    d.ctl_ok(&["create", "q", "--memory", "65536", "--instructions", "4000000000"]);
    d.execute("q", "got = 0 function __receive_callback(pid, b) got = got + 1 end").unwrap();
    let idle = curralloc(&d, "q");
    let busy = {
        let mut c = d.control();
        c.set_timeout(Some(std::time::Duration::from_secs(30)));
        std::thread::spawn(move || c.execute("q", b"while true do end", ""))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut data = d.data();
    let payload = [7u8; 4000];
    let mut sent = 0u64;
    let mut refused = None;
    for _ in 0..30 {
        data.send("q", &payload).unwrap();
        sent += 1;
        // A refusal comes back at once; an accepted message stays silent.
        data.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 4096];
        std::thread::sleep(std::time::Duration::from_millis(5));
        if let Err(e) = data.receive(&mut buf) {
            refused = Some(e.to_string());
            break;
        }
        data.set_nonblocking(false).unwrap();
    }
    let held = curralloc(&d, "q");
    let text = refused.expect("a message past maxalloc is refused");
    println!("idle {idle}, {} messages of 4000 bytes queued: curralloc {held}; refused: {text}", sent - 1);
    assert!(text.contains("not enough memory for a pending message of 4000 bytes"), "{text}");
    assert!(held >= idle + (sent - 1) * 4000, "idle {idle}, held {held}");
    assert!(held <= 65536, "held {held}");
    let result = busy.join().unwrap();
    assert!(result.is_err(), "the busy call ends at its wall-clock limit");
    // Delivered after the call: the room comes back.
    crate::util::wait_for("queued messages delivered", std::time::Duration::from_secs(5), || {
        d.execute("q", &format!("assert(got == {})", sent - 1)).is_ok()
    });
    let after = curralloc(&d, "q");
    println!("after delivery: curralloc {after}");
    // What stays is the receive buffer the messages came through (a lent buffer, 4000 bytes)
    // and some garbage of the callbacks; the ten waiting messages held 40000.
    assert!(after < idle + 9000, "idle {idle}, after {after}");
}
