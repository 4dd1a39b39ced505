//! CREATE / DESTROY / LIST / EXECUTE through the Rust client.

use nflua_client::consts::{DEFAULT_MAX_ALLOC_BYTES, SCRIPT_MAX};
use nflua_client::{ClientError, CreateRequest, Response, SocketState, StateFlags};

use crate::util::Daemon;

#[test]
fn create_list_destroy() {
    let d = Daemon::start();
    let mut c = d.control();
    c.create(&CreateRequest { name: "alpha", max_runs: 5000, max_alloc: 100_000, flags: StateFlags::DEBUG })
        .unwrap();
    c.create(&CreateRequest::new("beta", 10)).unwrap();
    let states = c.list().unwrap();
    assert_eq!(states.len(), 2);
    let alpha = states.iter().find(|s| s.name == "alpha").unwrap();
    assert_eq!((alpha.max_alloc, alpha.max_runs, alpha.flags), (100_000, Some(5000), StateFlags::DEBUG));
    assert!(alpha.cur_alloc > 0 && alpha.cur_alloc <= alpha.max_alloc, "{alpha:?}");
    let beta = states.iter().find(|s| s.name == "beta").unwrap();
    assert_eq!(beta.max_alloc as usize, DEFAULT_MAX_ALLOC_BYTES);
    c.destroy("alpha").unwrap();
    assert_eq!(d.state_names(), vec!["beta".to_owned()]);
}

#[test]
fn state_machine_follows_the_seed() {
    let d = Daemon::start();
    let mut c = d.control();
    assert_eq!(c.state(), SocketState::Ready);
    assert!(matches!(c.receive(), Err(ClientError::NotReady)));
    c.send_create(&CreateRequest::new("s", 100)).unwrap();
    assert_eq!(c.state(), SocketState::Waiting);
    assert!(matches!(c.send_list(), Err(ClientError::NotReady)));
    assert_eq!(c.wait(5000).unwrap(), Response::Done);
    assert_eq!(c.state(), SocketState::Ready);
}

#[test]
fn list_of_many_states_arrives_in_fragments() {
    let d = Daemon::start();
    let mut c = d.control();
    for i in 0..120 {
        c.create(&CreateRequest::new(&format!("s{i:03}"), 100)).unwrap();
    }
    c.send_list().unwrap();
    let mut pending = 0;
    let states = loop {
        assert!(c.wait_readable(5000).unwrap());
        match c.receive().unwrap() {
            Response::Pending => {
                pending += 1;
                assert_eq!(c.state(), SocketState::Receiving);
            }
            Response::States(s) => break s,
            other => panic!("LIST answered with {other:?}"),
        }
    };
    assert_eq!(pending, 2, "120 extended records take three fragments");
    assert_eq!(states.len(), 120);
    assert_eq!(c.state(), SocketState::Ready);
}

#[test]
fn execute_runs_code_and_reports_lua_errors() {
    let d = Daemon::start();
    d.create("st");
    d.execute("st", "x = 41").unwrap();
    d.execute("st", "assert(x == 41)").unwrap();
    match d.execute("st", "error('boom')") {
        Err(ClientError::Daemon { errno, message }) => {
            assert_eq!(errno, libc::EIO);
            assert!(message.contains("boom"), "{message}");
            assert!(message.contains("traceback"), "no traceback in {message}");
        }
        other => panic!("{other:?}"),
    }
    match d.execute("nope", "x = 1") {
        Err(ClientError::Daemon { errno, message }) => {
            assert_eq!(errno, libc::ENOENT);
            assert_eq!(message, "state 'nope' not found");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn execute_of_the_largest_script() {
    let d = Daemon::start();
    d.create("big");
    // A valid chunk of exactly 59968 bytes: an assignment padded with a comment.
    let mut code = String::from("big_ok = true --");
    code.push_str(&"x".repeat(SCRIPT_MAX - code.len()));
    assert_eq!(code.len(), SCRIPT_MAX);
    d.control().execute("big", code.as_bytes(), "big.lua").unwrap();
    d.execute("big", "assert(big_ok)").unwrap();
    let too_big = vec![b' '; SCRIPT_MAX + 1];
    assert!(matches!(d.control().execute("big", &too_big, ""), Err(ClientError::ScriptTooLarge(_))));
}

#[test]
fn chunk_name_shows_in_errors() {
    let d = Daemon::start();
    d.create("st");
    match d.control().execute("st", b"\n\nerror('x')", "@myscript.lua") {
        Err(ClientError::Daemon { message, .. }) => {
            assert!(message.contains("myscript.lua:3"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_clients_at_once() {
    let d = Daemon::start();
    d.create("shared");
    d.execute("shared", "n = 0").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let cfg = d.config();
            std::thread::spawn(move || {
                let mut c = nflua_client::ControlSocket::open(cfg, nflua_client::Port::Auto).unwrap();
                for _ in 0..25 {
                    c.execute("shared", b"n = n + 1", "").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    d.execute("shared", "assert(n == 200, n)").unwrap();
}
