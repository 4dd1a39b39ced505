//! SPEC §9: every bad input gets a clear error (exact errno and text) and
//! disturbs nothing else: the daemon keeps serving and the state `keeper`
//! keeps its place and its data.

use std::time::Duration;

use nflua_client::consts::{MAX_STATES, SCRIPT_FRAG_SIZE};
use nflua_client::{ClientError, CreateRequest};
use nflua_proto::{
    emit_message, encode_create, encode_data, execute_messages, MsgFlags, RecordFormat, StateRecord,
};

use crate::util::{Answer, Daemon, Raw};

const EBADMSG: i32 = libc::EBADMSG;
const EPROTO: i32 = libc::EPROTO;
const EMSGSIZE: i32 = libc::EMSGSIZE;

fn with_keeper() -> Daemon {
    let d = Daemon::start();
    d.create("keeper");
    d.execute("keeper", "kept = 0").unwrap();
    d
}

fn record(name: &str) -> StateRecord {
    StateRecord {
        name: name.into(),
        max_alloc: 65536,
        cur_alloc: 0,
        max_runs: Some(1000),
        flags: Some(Default::default()),
    }
}

fn create_msg(raw: &Raw, rec: &StateRecord) -> Vec<u8> {
    let mut b = Vec::new();
    encode_create(&mut b, 1, raw.port(), rec, RecordFormat::Extended);
    b
}

#[test]
fn truncated_oversized_and_lying_lengths() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    raw.send(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    raw.expect_error(EBADMSG, "truncated message: need 16 bytes, have 10");
    // header claims 100 bytes, datagram has 16
    let mut b = Vec::new();
    emit_message(&mut b, 18, MsgFlags::REQUEST, 1, raw.port(), &[]);
    b[0..4].copy_from_slice(&100u32.to_ne_bytes());
    raw.send(&b);
    raw.expect_error(EBADMSG, "truncated message: need 100 bytes, have 16");
    // header claims fewer bytes than a header
    b[0..4].copy_from_slice(&8u32.to_ne_bytes());
    raw.send(&b);
    raw.expect_error(EBADMSG, "invalid message length 8");
    // one message bigger than a page
    let mut big = Vec::new();
    emit_message(&mut big, 20, MsgFlags::REQUEST | MsgFlags::DONE, 1, raw.port(), &[&vec![0u8; 5000]]);
    raw.send(&big);
    raw.expect_error(EMSGSIZE, "exceeds");
    d.assert_serving(Some("keeper"));
}

#[test]
fn misaligned_second_message_in_a_datagram() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    // A valid DESTROY of a missing state, then 5 stray bytes.
    let mut b = Vec::new();
    nflua_proto::encode_destroy(&mut b, 3, raw.port(), "ghost");
    b.extend_from_slice(&[1, 2, 3, 4, 5]);
    raw.send(&b);
    raw.expect_error(libc::ENOENT, "state 'ghost' not found");
    raw.expect_error(EBADMSG, "truncated message: need 16 bytes, have 5");
    d.assert_serving(Some("keeper"));
}

#[test]
fn unknown_type() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    let mut b = Vec::new();
    emit_message(&mut b, 99, MsgFlags::REQUEST, 5, raw.port(), &[]);
    raw.send(&b);
    match raw.recv() {
        Answer::Error { errno, message, seq } => {
            assert_eq!((errno, message.as_str(), seq), (libc::EOPNOTSUPP, "unknown message type 99", 5));
        }
        other => panic!("{other:?}"),
    }
    // Netlink's own control messages are dropped, never answered.
    let mut b = Vec::new();
    emit_message(&mut b, 2, MsgFlags::empty(), 6, raw.port(), &[&[0u8; 20]]);
    raw.send(&b);
    raw.expect_silence();
    d.assert_serving(Some("keeper"));
}

fn exec_frags(raw: &Raw, seq: u32, len: usize) -> Vec<Vec<u8>> {
    execute_messages(seq, raw.port(), "keeper", "", &vec![b' '; len]).unwrap()
}

#[test]
fn fragments_out_of_order_duplicated_and_wrong_seq() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    let f = exec_frags(&raw, 7, 3 * SCRIPT_FRAG_SIZE);
    raw.send(&f[0]);
    raw.send(&f[2]);
    raw.expect_error(EPROTO, "fragment seq 2 out of order, expected 1");
    raw.expect_silence();

    let f = exec_frags(&raw, 8, 3 * SCRIPT_FRAG_SIZE);
    raw.send(&f[0]);
    raw.send(&f[1]);
    raw.send(&f[1]);
    raw.expect_error(EPROTO, "fragment seq 1 out of order, expected 2");
    raw.send(&f[2]); // rest of the failed request: dropped quietly
    raw.expect_silence();

    let f = exec_frags(&raw, 9, 2 * SCRIPT_FRAG_SIZE);
    let g = exec_frags(&raw, 10, 2 * SCRIPT_FRAG_SIZE);
    raw.send(&f[0]);
    raw.send(&g[1]);
    raw.expect_error(EPROTO, "fragment belongs to request seq 10, pending request has seq 9");

    // A follow-up fragment with nothing pending.
    raw.send(&g[1]);
    raw.expect_error(EPROTO, "fragment without a pending script");
    d.assert_serving(Some("keeper"));
}

#[test]
fn fragments_with_wrong_offsets_or_totals() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    let mut f = exec_frags(&raw, 3, 2 * SCRIPT_FRAG_SIZE);
    f[1][20..24].copy_from_slice(&5u32.to_ne_bytes()); // fragment offset
    raw.send(&f[0]);
    raw.send(&f[1]);
    raw.expect_error(EPROTO, &format!("fragment offset 5 is wrong, expected {SCRIPT_FRAG_SIZE}"));

    // total larger than what arrives
    let mut f = exec_frags(&raw, 4, 100);
    f[0][16..20].copy_from_slice(&200u32.to_ne_bytes());
    raw.send(&f[0]);
    raw.expect_error(EPROTO, "script ended after 100 of 200 bytes");
    // total over the maximum
    f[0][16..20].copy_from_slice(&60_000u32.to_ne_bytes());
    raw.send(&f[0]);
    raw.expect_error(EMSGSIZE, "script of 60000 bytes exceeds the maximum of 59968");
    // first fragment with a non-zero fragment seq
    let mut f = exec_frags(&raw, 5, 10);
    f[0][16 + 324..16 + 328].copy_from_slice(&1u32.to_ne_bytes());
    raw.send(&f[0]);
    raw.expect_error(EPROTO, "first fragment must have seq 0 and offset 0");
    d.assert_serving(Some("keeper"));
}

#[test]
fn more_than_sixteen_fragments() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    let body = vec![b' '; 10];
    let total = 17 * 10;
    // First fragment by hand: total 170, 10 bytes, MULTI.
    let mut first = exec_frags(&raw, 11, total).remove(0);
    first.truncate(16 + 332);
    first.extend_from_slice(&body);
    first[0..4].copy_from_slice(&((16 + 332 + 10) as u32).to_ne_bytes());
    first[6..8].copy_from_slice(&(MsgFlags::REQUEST | MsgFlags::INIT | MsgFlags::MULTI).bits().to_ne_bytes());
    raw.send(&first);
    for i in 1..=16u32 {
        let mut head = Vec::new();
        head.extend_from_slice(&i.to_ne_bytes());
        head.extend_from_slice(&(i * 10).to_ne_bytes());
        let mut b = Vec::new();
        emit_message(&mut b, 19, MsgFlags::REQUEST | MsgFlags::MULTI, 11, raw.port(), &[&head, &body]);
        raw.send(&b);
    }
    raw.expect_error(EMSGSIZE, "script needs more than 16 fragments");
    raw.expect_silence();
    d.assert_serving(Some("keeper"));
}

#[test]
fn bad_names() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    let cases: [(&[u8], &str); 3] = [
        (&[0u8; 64], "invalid state name: name is empty"),
        (&[b'a'; 64], "invalid state name: name has no terminating NUL in its 64 bytes"),
        (b"\xff\xfe\0", "invalid state name: name is not valid UTF-8"),
    ];
    for (name, text) in cases {
        let mut b = create_msg(&raw, &record("placeholder"));
        b[16..80].fill(0);
        b[16..16 + name.len()].copy_from_slice(name);
        raw.send(&b);
        raw.expect_error(libc::EINVAL, text);
    }
    // Bytes after the NUL are ignored (old clients leave garbage there).
    let mut b = create_msg(&raw, &record("tidy"));
    b[16 + 5..80].fill(0xAA);
    raw.send(&b);
    assert_eq!(raw.recv(), Answer::Ack(16));
    assert!(d.state_names().contains(&"tidy".to_owned()));
    // A 64-byte name cannot even be sent by our client.
    assert!(matches!(
        d.control().create(&CreateRequest::new(&"n".repeat(64), 10)),
        Err(ClientError::StateName(_))
    ));
    d.assert_serving(Some("keeper"));
}

#[test]
fn duplicate_names_memory_and_flags() {
    let d = with_keeper();
    let mut c = d.control();
    let err = c.create(&CreateRequest::new("keeper", 10)).unwrap_err();
    assert_eq!((err.errno(), err.to_string()), (libc::EEXIST, "state 'keeper' already exists".into()));
    let mut req = CreateRequest::new("tiny", 10);
    req.max_alloc = 32767;
    let err = c.create(&req).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(err.to_string(), "memory limit 32767 is below the minimum of 32768 bytes");
    req.max_alloc = 32768;
    c.create(&req).expect("the minimum itself is fine");

    let raw = Raw::new(&d);
    let mut b = create_msg(&raw, &record("flagged"));
    b[16 + 76..16 + 80].copy_from_slice(&2u32.to_ne_bytes());
    raw.send(&b);
    raw.expect_error(libc::EINVAL, "unknown state flags 0x2");
    let mut b = create_msg(&raw, &record("noruns"));
    b[16 + 72..16 + 76].copy_from_slice(&0u32.to_ne_bytes());
    raw.send(&b);
    raw.expect_error(libc::EINVAL, "maxruns must be at least 1");
    // CREATE of neither 72 nor 80 bytes
    let mut b = Vec::new();
    emit_message(&mut b, 16, MsgFlags::REQUEST, 1, raw.port(), &[&[0u8; 76]]);
    raw.send(&b);
    raw.expect_error(EMSGSIZE, "CREATE payload must be 72 or 80 bytes, got 76");
    d.assert_serving(Some("keeper"));
}

#[test]
fn more_than_maxstates() {
    let d = with_keeper();
    let mut c = d.control();
    for i in 1..MAX_STATES {
        let name = format!("s{i}");
        let mut req = CreateRequest::new(&name, 10);
        req.max_alloc = 32768;
        c.create(&req).unwrap_or_else(|e| panic!("state {i}: {e}"));
    }
    let err = c.create(&CreateRequest::new("one-too-many", 10)).unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC);
    assert_eq!(err.to_string(), format!("too many states (max {MAX_STATES})"));
    assert_eq!(c.list().unwrap().len(), MAX_STATES);
    // a legacy listing of all 904 fits what an old client can hold
    c.set_extended_list(false);
    assert_eq!(c.list().unwrap().len(), MAX_STATES);
    d.assert_serving(Some("keeper"));
}

fn lua_error(d: &Daemon, code: &str) -> String {
    match d.execute("victim", code) {
        Err(ClientError::Daemon { errno, message }) => {
            assert_eq!(errno, libc::EIO, "{message}");
            message
        }
        other => panic!("{code}: {other:?}"),
    }
}

#[test]
fn hostile_scripts() {
    let d = with_keeper();
    d.control()
        .create(&CreateRequest {
            name: "victim",
            max_runs: 100_000,
            max_alloc: 65536,
            flags: Default::default(),
        })
        .unwrap();
    assert!(lua_error(&d, "x = = 1").contains("unexpected symbol"));
    assert!(lua_error(&d, "while true do end").contains("instruction limit"));
    assert!(lua_error(&d, "local t = {} for i = 1, 1e9 do t[i] = i end").contains("not enough memory"));
    // A huge string.rep is charged its bytes before it runs: the instruction limit refuses it.
    assert!(lua_error(&d, "local s = string.rep('x', 1 << 30)").contains("instruction limit"));
    // One that the budget allows but the memory limit does not.
    assert!(lua_error(&d, "local s = string.rep('xxxxxxxxxxxxxxxxxxxx', 4000)").contains("not enough memory"));
    // Whichever limit a runaway recursion meets first (stack, memory) must stop it.
    let deep = lua_error(&d, "local function f() return 1 + f() end f()");
    assert!(deep.contains("stack overflow") || deep.contains("not enough memory"), "{deep}");
    assert!(lua_error(&d, "coroutine.yield(1)").contains("yield"));
    let victim = d.control().list().unwrap().into_iter().find(|s| s.name == "victim").unwrap();
    assert!(victim.cur_alloc <= victim.max_alloc, "{victim:?}");
    d.execute("victim", "ok = true").expect("victim recovers");
    d.assert_serving(Some("keeper"));
}

#[test]
fn errors_and_yields_inside_callbacks() {
    let d = with_keeper();
    d.create("victim");
    d.execute(
        "victim",
        r#"function __receive_callback(pid, b)
             local what = tostring(b)
             if what == "yield" then coroutine.yield() end
             if what == "loop" then while true do end end
             error("bad " .. what)
           end"#,
    )
    .unwrap();
    let mut s = d.data();
    let mut buf = vec![0u8; 4096];
    for (what, needle) in [("yield", "yield"), ("loop", "instruction limit"), ("thing", "bad thing")] {
        s.send("victim", what.as_bytes()).unwrap();
        match s.receive_timeout(&mut buf, 5000) {
            Err(ClientError::Daemon { errno, message }) => {
                assert_eq!(errno, libc::EIO);
                assert!(message.contains(needle), "{what}: {message}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    d.assert_serving(Some("keeper"));
}

#[test]
fn data_header_lies() {
    let d = with_keeper();
    let raw = Raw::new(&d);
    let mut b = Vec::new();
    encode_data(&mut b, 1, raw.port(), "keeper", b"12345");
    b[16..20].copy_from_slice(&9u32.to_ne_bytes());
    raw.send(&b);
    raw.expect_error(EMSGSIZE, "data total 9 does not match the 5 bytes carried");
    b[16..20].copy_from_slice(&5u32.to_ne_bytes());
    b[6..8].copy_from_slice(&MsgFlags::REQUEST.bits().to_ne_bytes());
    raw.send(&b);
    raw.expect_error(EPROTO, "invalid flags 0x1 for DATA");
    d.assert_serving(Some("keeper"));
}

#[test]
fn client_vanishing_mid_request_and_mid_reply() {
    let d = Daemon::start_with(&["--fragment-timeout", "1"]);
    d.create("keeper");
    for i in 0..200 {
        d.create(&format!("s{i}"));
    }
    {
        // Half an EXECUTE, then the socket goes away: dropped after the timeout.
        let raw = Raw::new(&d);
        let f = exec_frags(&raw, 1, 3 * SCRIPT_FRAG_SIZE);
        raw.send(&f[0]);
    }
    // A LIST whose reply (several datagrams) finds the socket closed: forgotten at once. The
    // close races the reply (a daemon quicker than the drop below delivers it all to the still
    // open socket), so a new client tries again until one reply finds its socket gone.
    let vanished = || d.log_text().contains("client vanished before its reply");
    let noticed = (0..20).any(|_| {
        {
            let raw = Raw::new(&d);
            let mut b = Vec::new();
            nflua_proto::encode_list(&mut b, 2, raw.port(), true);
            raw.send(&b);
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while !vanished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        vanished()
    });
    assert!(noticed, "no vanished LIST client was noticed in 20 tries:\n{}", d.log_text());
    crate::util::wait_for("the half-sent request to expire", Duration::from_secs(10), || {
        d.log_text().contains("dropped half-sent requests")
    });
    d.assert_serving(Some("keeper"));
    assert_eq!(d.state_names().len(), 201);
}

#[test]
fn destroy_of_unknown_state() {
    let d = with_keeper();
    let err = d.control().destroy("ghost").unwrap_err();
    assert_eq!((err.errno(), err.to_string()), (libc::ENOENT, "state 'ghost' not found".into()));
    d.assert_serving(Some("keeper"));
}

#[test]
fn sender_without_permission() {
    if !crate::util::have_root("sender_without_permission") {
        return;
    }
    let d = with_keeper();
    let run_as_nobody = |extra: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(crate::util::bin("nfluactl"))
            .args(["--port", &d.port.to_string()])
            .args(extra);
        crate::util::run_with_stdin(&mut cmd, None)
    };
    let out = run_as_nobody(&["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", crate::util::text(&out.stderr));
    assert_eq!(
        crate::util::text(&out.stderr).trim(),
        "nfluactl: permission denied: uid 65534 may not use nfluad (see nfluad --allow-uid/--allow-gid)"
    );
    d.assert_serving(Some("keeper"));

    let d2 = Daemon::start_with(&["--allow-uid", "65534"]);
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(crate::util::bin("nfluactl"))
        .args(["--port", &d2.port.to_string(), "create", "fromnobody"]);
    let out = crate::util::run_with_stdin(&mut cmd, None);
    assert!(out.status.success(), "{}", crate::util::text(&out.stderr));
    assert_eq!(d2.state_names(), vec!["fromnobody".to_owned()]);
}

#[test]
fn data_flood_is_reported_not_lost() {
    let d = with_keeper();
    d.create("relay");
    // The state forwards every message to a listener that never reads.
    let listener = d.data();
    listener.set_recv_buffer(4096).unwrap();
    let port = listener.port().unwrap();
    d.execute(
        "relay",
        &format!("function __receive_callback(pid, b) nf.netlink({port}, 0, tostring(b)) end"),
    )
    .unwrap();
    let mut s = d.data();
    let payload = vec![b'x'; 2000];
    let mut buf = vec![0u8; 4096];
    let mut reported = None;
    for _ in 0..2000 {
        s.send("relay", &payload).unwrap();
        if s.wait_readable(0).unwrap() {
            break;
        }
    }
    // DATA runs on the state's worker after the receiving thread queued it, so the error may
    // come after the loop; a sender faster than the state may also hear that the state's queue
    // is full ("state 'relay' is busy") or its memory ("not enough memory for a pending
    // message") first.
    for _ in 0..2000 {
        match s.receive_timeout(&mut buf, 5000) {
            Err(ClientError::Overflow { message: Some(m) }) if m.starts_with("state 'relay' is busy") => {}
            // ... or that the messages already waiting for it fill its memory.
            Err(ClientError::Daemon { errno, message })
                if errno == libc::ENOMEM && message.contains("pending message") => {}
            other => {
                reported = Some(other);
                break;
            }
        }
    }
    match reported {
        Some(Err(ClientError::Daemon { errno, message })) => {
            assert_eq!(errno, libc::EIO);
            assert!(message.contains("Resource temporarily unavailable"), "{message}");
        }
        other => panic!("a full receiver must be reported to the sender, got {other:?}"),
    }
    d.assert_serving(Some("keeper"));
    drop(listener);
}

#[test]
fn a_daemon_squatting_as_another_user_is_not_trusted() {
    if !crate::util::have_root("a_daemon_squatting_as_another_user_is_not_trusted") {
        return;
    }
    // A real nfluad, but running as nobody: what a squatter on the port would be.
    let port = crate::util::private_port();
    let mut squatter = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(crate::util::bin("nfluad"))
        .args(["--port", &port.to_string(), "--allow-uid", "0"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("setpriv nfluad");
    let trusting = nflua_client::ClientConfig { daemon_port: port, trusted_uids: vec![0, 65534] };
    crate::util::wait_for("the squatter", Duration::from_secs(10), || {
        let mut c = nflua_client::ControlSocket::open(trusting.clone(), nflua_client::Port::Auto).unwrap();
        c.send_list().is_ok() && c.wait(500).is_ok()
    });
    // Default trust (root only): its replies are dropped, the command never completes.
    let default = nflua_client::ClientConfig::default().with_port(port);
    let mut c = nflua_client::ControlSocket::open(default, nflua_client::Port::Auto).unwrap();
    c.send_list().unwrap();
    assert!(matches!(c.wait(1000), Err(ClientError::TimedOut)));
    let out = crate::util::run_with_stdin(
        std::process::Command::new(crate::util::bin("nfluactl")).args([
            "--port",
            &port.to_string(),
            "--reply-timeout",
            "500",
            "list",
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    // Its port is bound: from the client's side, a daemon that does not answer.
    assert_eq!(
        crate::util::text(&out.stderr).trim(),
        "nfluactl: no answer within 500 ms; the request may still complete"
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
}

/// Every failed request leaves one WARN line in the log, the original module's kernel-log text
/// first and ours after it (tools and the original's own tests look for those texts).
#[test]
fn failed_requests_are_logged_with_the_original_texts() {
    let d = with_keeper();
    let mut c = d.control();
    assert!(c.create(&CreateRequest::new("keeper", 10)).is_err());
    let mut tiny = CreateRequest::new("tiny", 10);
    tiny.max_alloc = 1024;
    assert!(c.create(&tiny).is_err());
    assert!(c.execute("ghost", b"x = 1", "").is_err());
    assert!(c.execute("keeper", b"error('boom')", "").is_err());
    assert!(c.destroy("ghost").is_err());
    let raw = Raw::new(&d);
    let f = exec_frags(&raw, 7, 3 * SCRIPT_FRAG_SIZE);
    raw.send(&f[0]);
    raw.send(&f[2]);
    raw.expect_error(EPROTO, "fragment seq 2 out of order, expected 1");
    let mut b = Vec::new();
    encode_data(&mut b, 1, raw.port(), "keeper", b"12345");
    b[16..20].copy_from_slice(&9u32.to_ne_bytes());
    raw.send(&b);
    raw.expect_error(EMSGSIZE, "data total 9 does not match the 5 bytes carried");
    raw.send(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    raw.expect_error(EBADMSG, "truncated message: need 16 bytes, have 10");
    let wanted = [
        "state already exists: keeper: ",
        "max states limit reached or out of memory: ",
        "lua state not found: ",
        "could not execute / load data!: ",
        "NFLMSG_EXECUTE fragment out of order: fragment seq 2 out of order, expected 1",
        "payload larger than allowed: data total 9 does not match the 5 bytes carried",
        "netlink protocol out of sync: ",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let log = loop {
        let log = d.log_text();
        if wanted.iter().all(|w| log.contains(w)) || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = |text: &str| log.lines().filter(|l| l.contains(text) && l.contains("WARN")).count();
    for w in wanted {
        let expected = if w == "lua state not found: " { 2 } else { 1 };
        assert_eq!(lines(w), expected, "{w:?} in:\n{log}");
    }
    d.assert_serving(Some("keeper"));
}
