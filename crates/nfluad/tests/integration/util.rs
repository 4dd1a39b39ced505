//! Harness: a real `nfluad` on a private port, `nfluactl` runs, and raw
//! Netlink sockets for hand-made bad input.

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nflua_client::socket::{NetlinkSocket, Port};
use nflua_client::{ClientConfig, ClientError, ControlSocket, CreateRequest, DataSocket};
use nflua_proto::{messages, Reply};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A port id no other test (or test binary) uses at the same time.
pub fn private_port() -> u32 {
    0x2000_0000 | ((std::process::id() & 0xFFFF) << 8) | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xFF)
}

pub fn bin(name: &str) -> PathBuf {
    let daemon = PathBuf::from(env!("CARGO_BIN_EXE_nfluad"));
    if name == "nfluad" {
        return daemon;
    }
    let path = daemon.with_file_name(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` before the tests", path.display());
    path
}

/// True when tests needing root must run (CI) rather than skip.
pub fn require_priv() -> bool {
    std::env::var("NFLUA_REQUIRE_PRIV").is_ok_and(|v| v == "1")
}

/// Skips (loudly) a test that needs root, unless CI demands it.
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(!require_priv(), "{test}: NFLUA_REQUIRE_PRIV=1 but not running as root");
        eprintln!("SKIPPED {test}: needs root (set NFLUA_REQUIRE_PRIV=1 to make this a failure)");
    }
    root
}

pub struct Daemon {
    pub port: u32,
    child: Child,
    pub log: PathBuf,
    /// Network namespace the daemon serves, `None` for the test's own.
    pub netns: Option<String>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_in(None, args)
    }

    /// Starts a daemon inside network namespace `netns` (via `ip netns exec`).
    pub fn start_in(netns: Option<&str>, args: &[&str]) -> Daemon {
        Daemon::start_on(netns, private_port(), args)
    }

    /// Starts a daemon on a given port (e.g. again after [`Daemon::kill`]).
    pub fn start_on(netns: Option<&str>, port: u32, args: &[&str]) -> Daemon {
        let cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("nfluad"));
                c
            }
            None => Command::new(bin("nfluad")),
        };
        Daemon::spawn(cmd, netns, port, args)
    }

    /// Starts nfluad through `wrapper` (a command that execs its arguments in
    /// place, e.g. `nsenter -t PID -m`), in the test's network namespace.
    pub fn start_wrapped(wrapper: &[&str], port: u32, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(bin("nfluad"));
        Daemon::spawn(cmd, None, port, args)
    }

    fn spawn(mut cmd: Command, netns: Option<&str>, port: u32, args: &[&str]) -> Daemon {
        let log = std::env::temp_dir().join(format!("nfluad-test-{port:x}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .env("NFLUA_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn nfluad");
        let mut d = Daemon { port, child, log, netns: netns.map(str::to_owned) };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.control().list() {
                Ok(_) => return,
                Err(ClientError::NotRunning { .. }) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("nfluad exited early with {status}:\n{}", self.log_text());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("nfluad did not come up: {e}\n{}", self.log_text()),
            }
        }
    }

    /// Process id of the daemon itself (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig::default().with_port(self.port)
    }

    pub fn control(&self) -> ControlSocket {
        let config = self.config();
        self.in_netns(move || ControlSocket::open(config, Port::Auto)).expect("control socket")
    }

    pub fn data(&self) -> DataSocket {
        let config = self.config();
        self.in_netns(move || DataSocket::open(config, Port::Auto)).expect("data socket")
    }

    /// Runs `f` in the daemon's network namespace (sockets made there stay there).
    pub fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match &self.netns {
            Some(ns) => crate::netns::in_netns(ns, f),
            None => f(),
        }
    }

    /// Creates a state with the default limits.
    pub fn create(&self, name: &str) {
        self.control().create(&CreateRequest::new(name, 1_000_000)).expect("create");
    }

    pub fn execute(&self, name: &str, code: &str) -> Result<(), ClientError> {
        self.control().execute(name, code.as_bytes(), "")
    }

    pub fn state_names(&self) -> Vec<String> {
        self.control().list().expect("list").into_iter().map(|s| s.name).collect()
    }

    /// Runs nfluactl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, None)
    }

    pub fn ctl_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("nfluactl"));
                c
            }
            None => Command::new(bin("nfluactl")),
        };
        run_with_stdin(cmd.arg("--port").arg(self.port.to_string()).args(args), stdin)
    }

    /// Runs nfluactl and asserts success; returns stdout.
    /// `hook add` of a target hook: queue 0, state `fw`, function `filter`, UDP to port 9000,
    /// with overflow policy `overflow`. Returns the rules it printed, checked to name the policy.
    pub fn add_udp_target_hook(&self, overflow: &str) -> String {
        let printed = self.ctl_ok(&[
            "hook",
            "add",
            "--queue",
            "0",
            "--state",
            "fw",
            "--function",
            "filter",
            "--mode",
            "target",
            "--rule",
            "-p udp --dport 9000",
            "--overflow",
            overflow,
        ]);
        assert!(printed.starts_with(&format!("# overflow: {overflow} (")), "{printed}");
        printed
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "nfluactl {args:?} failed: {}", text(&out.stderr));
        text(&out.stdout)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status; returns it with the log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, self.log_text());
            }
            assert!(Instant::now() < deadline, "nfluad ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would: no clean shutdown of any kind.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The daemon still answers and `keeper` (if any) still runs Lua.
    pub fn assert_serving(&self, keeper: Option<&str>) {
        let names = self.state_names();
        if let Some(k) = keeper {
            assert!(names.iter().any(|n| n == k), "state {k} vanished: {names:?}");
            self.execute(k, "kept = (kept or 0) + 1").expect("keeper still executes");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("--- nfluad log ({}) ---\n{}", self.log.display(), self.log_text());
        }
    }
}

pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(bytes) = stdin {
        child.stdin.take().expect("stdin").write_all(bytes).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A raw socket for sending hand-made datagrams to the daemon.
pub struct Raw {
    pub sock: NetlinkSocket,
    daemon: u32,
}

/// A decoded reply, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack(u16),
    Error { errno: i32, message: String, seq: u32 },
    Other(String),
}

impl Raw {
    pub fn new(daemon: &Daemon) -> Raw {
        Raw { sock: NetlinkSocket::bind(Port::Auto, 0).expect("raw socket"), daemon: daemon.port }
    }

    pub fn port(&self) -> u32 {
        self.sock.port()
    }

    pub fn send(&self, datagram: &[u8]) {
        self.sock.send_to(datagram, self.daemon, 0).expect("send");
    }

    /// The next reply, within 5 s.
    pub fn recv(&self) -> Answer {
        self.recv_within(5000).expect("no reply from nfluad within 5 s")
    }

    pub fn recv_within(&self, timeout_ms: i32) -> Option<Answer> {
        let timeout = Some(Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)));
        if !self.sock.wait_readable(timeout).expect("poll") {
            return None;
        }
        let mut buf = vec![0u8; 16384];
        let info = self.sock.recv(&mut buf, false).expect("recv");
        let msg = messages(&buf[..info.len]).next().expect("a message").expect("well formed");
        Some(match Reply::decode(&msg).expect("decodable") {
            Reply::Ack { ty } => Answer::Ack(ty.as_u16()),
            Reply::Error(e) => Answer::Error {
                errno: e.errno,
                message: e.message.unwrap_or_default().to_owned(),
                seq: msg.header.seq,
            },
            other => Answer::Other(format!("{other:?}")),
        })
    }

    /// Asserts the next reply is an error with `errno` whose text contains `needle`.
    pub fn expect_error(&self, errno: i32, needle: &str) {
        match self.recv() {
            Answer::Error { errno: e, message, .. } => {
                assert_eq!(e, errno, "errno for {message:?}");
                assert!(message.contains(needle), "{message:?} does not contain {needle:?}");
            }
            other => panic!("expected error {errno} ({needle}), got {other:?}"),
        }
    }

    /// Asserts nothing arrives for a short while.
    pub fn expect_silence(&self) {
        if let Some(a) = self.recv_within(300) {
            panic!("expected no reply, got {a:?}");
        }
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets a UDP socket's receive buffer past the system limit (`SO_RCVBUFFORCE`, needs root), so
/// a test's receiver never drops what the packet path passed.
pub fn force_recv_buffer(sock: &std::net::UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to an int that lives for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Held by tests that measure latency (isolation) and by those that load both cores (floods,
/// many connections), so that the two never run at once: the suite runs two tests at a time on
/// a 2-core machine, and a flood next to a latency test measures the flood.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What state `st` answers to a data message (its `__receive_callback` answers the sender).
pub fn ask(d: &Daemon, st: &str) -> String {
    let mut s = d.data();
    s.send(st, b"?").expect("send");
    let mut buf = vec![0u8; nflua_client::consts::DATA_MAX];
    let m = s.receive_timeout(&mut buf, 5000).expect("answer");
    String::from_utf8_lossy(&buf[..m.len]).into_owned()
}
