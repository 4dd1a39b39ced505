//! DATA both ways: send → __receive_callback → nf.netlink → receive.

use nflua_client::consts::DATA_MAX;
use nflua_client::ClientError;

use crate::util::Daemon;

const ECHO: &str = r#"
function __receive_callback(pid, buf)
  nf.netlink(pid, 0, "echo:" .. tostring(buf))
end
"#;

#[test]
fn round_trip_through_a_state() {
    let d = Daemon::start();
    d.create("echo");
    d.execute("echo", ECHO).unwrap();
    let mut s = d.data();
    s.send("echo", b"hello").unwrap();
    let mut buf = vec![0u8; DATA_MAX];
    let m = s.receive_timeout(&mut buf, 5000).unwrap();
    assert_eq!(m.state, "echo");
    assert_eq!(&buf[..m.len], b"echo:hello");
}

#[test]
fn callback_sees_pid_and_bytes_and_the_largest_payload() {
    let d = Daemon::start();
    d.create("st");
    d.execute(
        "st",
        r#"function __receive_callback(pid, buf)
             nf.netlink(pid, 0, string.format("%d %d %d", pid, #buf, buf[#buf]))
           end"#,
    )
    .unwrap();
    let mut s = d.data();
    let port = s.port().unwrap();
    let mut payload = vec![7u8; DATA_MAX];
    payload[DATA_MAX - 1] = 200;
    s.send("st", &payload).unwrap();
    let mut buf = vec![0u8; DATA_MAX];
    let m = s.receive_timeout(&mut buf, 5000).unwrap();
    // Lua sees the port as an integer: automatic ports have bit 31 set.
    assert_eq!(String::from_utf8_lossy(&buf[..m.len]), format!("{port} {DATA_MAX} 200"));
    assert!(matches!(s.send("st", &vec![0; DATA_MAX + 1]), Err(ClientError::DataTooLarge(_))));
}

#[test]
fn nf_netlink_to_another_socket() {
    let d = Daemon::start();
    d.create("pub");
    let mut listener = d.data();
    let port = listener.port().unwrap();
    // Old C bindings report automatic ports as negative numbers: both work.
    let negative = port as i32;
    d.execute("pub", &format!("assert(nf.netlink({port}, 0, 'one') == 3) nf.netlink({negative}, 0, 'two')"))
        .unwrap();
    let mut buf = vec![0u8; DATA_MAX];
    for want in ["one", "two"] {
        let m = listener.receive_timeout(&mut buf, 5000).unwrap();
        assert_eq!((&buf[..m.len], m.state.as_str()), (want.as_bytes(), "pub"));
    }
}

#[test]
fn delivery_errors_come_back_to_the_sender() {
    let d = Daemon::start();
    d.create("nocb");
    d.create("failing");
    d.execute("failing", "function __receive_callback() error('cb failed') end").unwrap();
    let mut s = d.data();
    let mut buf = vec![0u8; DATA_MAX];
    let cases = [
        ("ghost", libc::ENOENT, "state 'ghost' not found"),
        ("nocb", libc::ENOENT, "state 'nocb' has no __receive_callback"),
        ("failing", libc::EIO, "cb failed"),
    ];
    for (state, errno, text) in cases {
        s.send(state, b"x").unwrap();
        match s.receive_timeout(&mut buf, 5000) {
            Err(ClientError::Daemon { errno: e, message }) => {
                assert_eq!(e, errno, "{state}: {message}");
                assert!(message.contains(text), "{state}: {message}");
            }
            other => panic!("{state}: {other:?}"),
        }
    }
    d.assert_serving(Some("nocb"));
}

#[test]
fn stashed_buffers_are_invalid_after_the_callback() {
    let d = Daemon::start();
    d.create("st");
    d.execute("st", "function __receive_callback(pid, b) kept = b end").unwrap();
    d.data().send("st", b"abc").unwrap();
    crate::util::wait_for("the callback", std::time::Duration::from_secs(5), || {
        d.execute("st", "assert(kept)").is_ok()
    });
    match d.execute("st", "return kept[1]") {
        Err(ClientError::Daemon { message, .. }) => {
            assert!(message.contains("no longer valid"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn timers_fire_in_order_and_can_be_cancelled() {
    let d = Daemon::start();
    d.create("t");
    let mut listener = d.data();
    let port = listener.port().unwrap();
    d.execute(
        "t",
        &format!(
            r#"local port = {port}
               timer.create(50, function() nf.netlink(port, 0, "first") end)
               local doomed = timer.create(100, function() nf.netlink(port, 0, "cancelled") end)
               timer.destroy(doomed)
               timer.create(150, function() error("timer boom") end)
               timer.create(200, function()
                 nf.netlink(port, 0, "second")
                 timer.create(20, function() nf.netlink(port, 0, "from a timer") end)
               end)
               timer.create(120, function() while true do end end)"#
        ),
    )
    .unwrap();
    let mut buf = vec![0u8; DATA_MAX];
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = listener.receive_timeout(&mut buf, 5000).expect("a timer message");
        got.push(String::from_utf8_lossy(&buf[..m.len]).into_owned());
    }
    assert_eq!(got, vec!["first", "second", "from a timer"]);
    assert!(matches!(listener.receive_timeout(&mut buf, 300), Err(ClientError::TimedOut)));
    d.assert_serving(Some("t"));
    let log = d.log_text();
    assert!(log.contains("timer boom"), "timer errors are logged");
}

/// DATA messages the flood test sends: a 4 KiB receiver holds a handful.
const FLOOD: usize = 1000;

/// Asks for the state list and checks the answer came within 2 s.
fn list_promptly(control: &mut nflua_client::ControlSocket) {
    let asked = std::time::Instant::now();
    control.list().expect("list during the flood");
    let took = asked.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "LIST took {took:?} during a DATA flood");
}

/// What a flooded receiver read.
#[derive(Debug, Default)]
struct Received {
    delivered: usize,
    /// Sum of the counts the daemon's loss notices stated.
    lost: usize,
    notices: usize,
}

/// Reads DATA messages and loss notices until all `total` messages are
/// accounted for, one way or the other.
fn receive_or_account(receiver: &mut nflua_client::DataSocket, total: usize) -> Received {
    let mut buf = vec![0u8; DATA_MAX];
    let mut got = Received::default();
    while got.delivered + got.lost < total {
        match receiver.receive_timeout(&mut buf, 5000) {
            Ok(m) => {
                assert_eq!((m.len, m.state.as_str()), (2000, "relay"));
                got.delivered += 1;
            }
            Err(ClientError::Overflow { message: Some(text) }) => {
                let (count, rest) = text.split_once(' ').unwrap_or_default();
                assert!(
                    rest.ends_with("from nfluad were dropped: receive buffer full")
                        || rest == "message from nfluad was dropped: receive buffer full",
                    "{text}"
                );
                got.lost += count.parse::<usize>().unwrap_or_else(|_| panic!("no count in {text:?}"));
                got.notices += 1;
            }
            Err(e) => panic!("after {got:?}: {e:?} (errno {})", e.errno()),
        }
    }
    got
}

#[test]
fn a_flooded_receiver_learns_how_many_messages_it_lost() {
    let d = Daemon::start();
    // Room for the whole flood waiting in the relay's queue (DATA waiting for a state counts in
    // its memory and is refused past it): this test is about the receiver's losses.
    d.ctl_ok(&["create", "relay", "--memory", "8388608"]);
    // The receiver stops reading: its tiny buffer fills after a few messages.
    let mut receiver = d.data();
    receiver.set_recv_buffer(4096).unwrap();
    let port = receiver.port().unwrap();
    d.execute(
        "relay",
        &format!("function __receive_callback(pid, b) nf.netlink({port}, 0, tostring(b)) end"),
    )
    .unwrap();
    let mut sender = d.data();
    let flood = std::thread::spawn(move || {
        let payload = vec![b'x'; 2000];
        for _ in 0..FLOOD {
            sender.send("relay", &payload).expect("send to relay");
        }
        sender
    });
    let mut control = d.control();
    while !flood.is_finished() {
        list_promptly(&mut control);
    }
    let mut sender = flood.join().expect("flood thread");
    // Answered after every DATA of the flood: the relay has seen them all.
    list_promptly(&mut control);

    let got = receive_or_account(&mut receiver, FLOOD);
    assert!(got.delivered > 0 && got.lost > 0 && got.notices > 0, "{got:?}");
    assert_eq!(got.delivered + got.lost, FLOOD, "every message is delivered or counted: {got:?}");

    // Nothing more to report: what comes next arrives normally.
    sender.send("relay", &[b'y'; 2000]).unwrap();
    let mut buf = vec![0u8; DATA_MAX];
    let m = receiver.receive_timeout(&mut buf, 5000).expect("a message after the notice");
    assert_eq!(&buf[..m.len], &[b'y'; 2000][..]);

    let json: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).unwrap();
    assert_eq!(json["netlink"]["dropped"], got.lost, "{json}");
    assert_eq!(json["netlink"]["loss_notices"], got.notices, "{json}");
    d.assert_serving(Some("relay"));
}
