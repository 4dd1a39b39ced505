//! Limits seen from a client of a real nfluad: library calls that used to run for ages stop at
//! `maxruns` within 100 ms, coroutines cannot stretch the instruction budget, and errors inside
//! states are strings with the chunk position. Each asserts the figure (elapsed time, the
//! `instructions` the daemon reports, iterations that ran), not only the error.

use std::time::{Duration, Instant};

use nflua_client::ClientError;

use crate::util::Daemon;

fn instructions(d: &Daemon, name: &str) -> u64 {
    let json: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).unwrap();
    let state = json["states"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    state["instructions"].as_u64().unwrap()
}

/// The daemon's error text for `code` run in state `name`.
fn failure(d: &Daemon, name: &str, code: &str) -> String {
    match d.execute(name, code) {
        Err(ClientError::Daemon { message, .. }) => message,
        other => panic!("{code}: {other:?}"),
    }
}

#[test]
fn library_calls_stop_at_maxruns_within_100_ms() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "a", "--instructions", "100000", "--memory", "67108864"]);
    d.execute("a", "t = {} for i = 1, 10 do t[i] = 'x' end").unwrap();
    for call in [
        "return #string.rep('', math.maxinteger)",
        "string.find(string.rep('a', 400), '.-.-.-.-b')",
        "(string.rep('a', 2000)):gsub('.-.-.-x', '')",
        "for k in (string.rep('a', 400)):gmatch('.-.-.-.-b') do end",
        "table.move({}, 1, 1e9, 1)",
        "table.concat(t, string.rep('', 1e9))",
        "local s = string.rep('x', 40000) for i = 1, 1e9 do local u = s:upper() end",
        "local s = string.rep('x', 40000) for i = 1, 1e9 do local u = string.format('%s%s', s, s) end",
        "local t = {} for i = 1, 1e5 do t[i] = i end for i = 1, 1e9 do table.sort(t) end",
        "for i = 1, 1e9 do local d = data.new(1e6) end",
        "local s = string.rep('x', 40000) for i = 1, 1e9 do local e = base64.encode(s) end",
        "for i = 1, 1e9 do select('#', table.unpack({}, 1, 1e6)) end",
    ] {
        let before = instructions(&d, "a");
        let started = Instant::now();
        let text = failure(&d, "a", call);
        let took = started.elapsed();
        let charged = instructions(&d, "a") - before;
        println!("{call}: {took:?}, {charged} instructions charged: {}", text.lines().next().unwrap_or(""));
        assert!(text.contains("instruction limit exceeded"), "{call}: {text}");
        assert!(took < Duration::from_millis(100), "{call}: {took:?}");
        assert!((100_001..=101_024).contains(&charged), "{call}: {charged} charged at maxruns 100000");
    }
    d.execute("a", "ok = true").expect("the state still serves");
}

#[test]
fn coroutines_cannot_stretch_maxruns() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "c", "--instructions", "100000", "--memory", "1048576"]);
    for make in ["coroutine.resume(coroutine.create(body))", "coroutine.wrap(body)()"] {
        let script = format!(
            "done = 0 local function body() for j = 1, 490 do end end \
             for i = 1, 1e9 do {make} done = done + 1 end"
        );
        let before = instructions(&d, "c");
        let text = failure(&d, "c", &script);
        assert!(text.contains("instruction limit exceeded"), "{text}");
        assert_eq!(instructions(&d, "c") - before, 100_001);
        let text = failure(&d, "c", "error(tostring(done), 0)");
        let done: u64 = text.lines().next().unwrap_or("").parse().unwrap();
        // One iteration runs at least the 490 steps of the coroutine's loop (one FORLOOP each).
        let ran_at_least = done * 490;
        println!("{make}: {done} iterations finished under maxruns 100000 (>= {ran_at_least} instructions)");
        assert!(ran_at_least <= 101_000, "{make}: {done} iterations ran");
        assert!(done >= 150, "{make}: only {done} iterations");
    }
}

#[test]
fn errors_inside_states_are_strings_with_the_position() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "e"]);
    for code in [
        "data.new(2)[5] = 1",
        "json.encode(print)",
        "base64.decode({})",
        "nf.netlink()",
        "timer.create()",
        "data.new(-1)",
        "string.rep()",
        "('x'):rep({})",
        "string.find('a', '%')",
        "table.concat({{}})",
    ] {
        let script = format!(
            "local ok, e = pcall(function()\n{code}\nend)\n\
             assert(not ok, 'no error')\n\
             assert(type(e) == 'string', 'type ' .. type(e))\n\
             assert(e:find('^chunk:2: '), e)\n\
             error(e, 0)"
        );
        let text = failure(&d, "e", &script);
        println!("{code}: {}", text.lines().next().unwrap_or(""));
        assert!(text.starts_with("chunk:2: "), "{code}: {text}");
    }
}
