//! Command line of `nfluad`, validated into [`Config`] before any work.

use clap::Parser;
use nflua_proto::consts::{DEFAULT_MAX_RUNS, DEFAULT_PORT};

/// The nflua engine daemon: named Lua states, served over Netlink
/// (NETLINK_USERSOCK). One daemon per network namespace.
#[derive(Debug, Parser)]
#[command(name = "nfluad", version, about)]
pub struct Args {
    /// Netlink port id to serve on (decimal or 0x hex), below 0x80000000.
    #[arg(long, env = "NFLUA_PORT", default_value_t = format!("{DEFAULT_PORT:#x}"))]
    pub port: String,

    /// Also accept requests from this uid (root is always accepted). Repeatable.
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uid: Vec<u32>,

    /// Also accept requests from senders with this gid. Repeatable.
    #[arg(long = "allow-gid", value_name = "GID")]
    pub allow_gid: Vec<u32>,

    /// Instruction limit (maxruns) of states created with a legacy 72-byte CREATE.
    #[arg(long, default_value_t = DEFAULT_MAX_RUNS, value_parser = clap::value_parser!(u32).range(1..))]
    pub default_maxruns: u32,

    /// Receive buffer of the Netlink socket in bytes. A full buffer makes senders wait (or
    /// get EAGAIN), it loses no request; a larger one only lengthens the line that a flood of
    /// datagrams makes every other request wait in (about 3 µs per queued datagram).
    #[arg(long, default_value_t = 1 << 20)]
    pub recv_buffer: usize,

    /// Seconds a half-sent EXECUTE may wait for its next fragment before it is dropped.
    #[arg(long, default_value_t = 30)]
    pub fragment_timeout: u64,

    /// Kernel queue length of each NFQUEUE queue (packets waiting for a verdict).
    #[arg(long, default_value_t = 4096)]
    pub queue_maxlen: u32,

    /// Receive buffer of each NFQUEUE socket in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub queue_recv_buffer: usize,

    /// Serve statistics as Prometheus text over HTTP on this address (e.g. 127.0.0.1:9113).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Journal states, executed chunks and hooks in DIR and restore them on start.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,

    /// Wall time one Lua entry (execute, receive callback, timer) may take before it is stopped
    /// with "time limit exceeded", in milliseconds; 0: no limit. A backstop behind maxruns.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub max_call_ms: u64,

    /// The same for one packet hook call (which holds its packet and the queue); 0: no limit.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub max_hook_ms: u64,

    /// How long a stream hook may hold a connection's packets while its function has not
    /// decided, in milliseconds; past it the connection gets the hook's on-error verdict.
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_timeout_ms: u64,

    /// Bytes of reassembled streams all stream hooks may keep together (each queue keeps at
    /// most 32 MiB besides); a segment that does not fit breaks its stream (on-error verdict).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub stream_memory: usize,

    /// Log filter (tracing's env-filter syntax), e.g. "info" or "nflua=debug".
    #[arg(long, env = "NFLUA_LOG", default_value = "info")]
    pub log: String,
}

/// Ids the kernel hands out to sockets bound without one have this bit set
/// (SPEC §3): a daemon there could collide with any client.
const AUTO_PORT_BIT: u32 = 1 << 31;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u32,
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub default_max_runs: u32,
    pub recv_buffer: usize,
    pub fragment_timeout: std::time::Duration,
    pub queue_maxlen: u32,
    pub queue_recv_buffer: usize,
    pub metrics: Option<String>,
    pub state_dir: Option<std::path::PathBuf>,
    /// `--max-call-ms` and `--max-hook-ms`; `None`: no limit.
    pub max_call: Option<std::time::Duration>,
    pub max_hook_call: Option<std::time::Duration>,
    /// `--stream-timeout-ms`.
    pub stream_timeout: std::time::Duration,
    pub stream_memory: usize,
}

impl Args {
    pub fn into_config(self) -> anyhow::Result<Config> {
        let port = nflua_netlink::parse_port(&self.port)
            .filter(|&p| p != 0)
            .ok_or_else(|| anyhow::anyhow!("invalid --port {:?}: expected a non-zero port id", self.port))?;
        if port & AUTO_PORT_BIT != 0 {
            anyhow::bail!(
                "invalid --port {:?}: ids with bit 31 set ({port:#x} >= 0x80000000) are the kernel's \
                 automatic client range (SPEC §3); choose an id below 0x80000000",
                self.port
            );
        }
        Ok(Config {
            port,
            allow_uids: self.allow_uid,
            allow_gids: self.allow_gid,
            default_max_runs: self.default_maxruns,
            recv_buffer: self.recv_buffer,
            fragment_timeout: std::time::Duration::from_secs(self.fragment_timeout.max(1)),
            queue_maxlen: self.queue_maxlen,
            queue_recv_buffer: self.queue_recv_buffer,
            metrics: self.metrics,
            state_dir: self.state_dir,
            max_call: millis(self.max_call_ms),
            max_hook_call: millis(self.max_hook_ms),
            stream_timeout: std::time::Duration::from_millis(self.stream_timeout_ms),
            stream_memory: self.stream_memory,
        })
    }
}

/// A limit in milliseconds, 0 meaning none.
fn millis(ms: u64) -> Option<std::time::Duration> {
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}
