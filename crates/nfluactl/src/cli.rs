//! Command line, as clap derive types.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use nflua_client::consts::{DEFAULT_MAX_ALLOC_BYTES, DEFAULT_MAX_RUNS};

/// Control nfluad: create, destroy, list and program Lua states, and exchange
/// data messages with them.
#[derive(Debug, Parser)]
#[command(name = "nfluactl", version, about)]
pub struct Cli {
    /// Port id of the daemon (decimal or 0x hex).
    #[arg(long, global = true, env = "NFLUA_PORT")]
    pub port: Option<String>,

    /// Milliseconds to wait for the daemon's answer to a command (0: forever).
    #[arg(long, global = true, default_value_t = 10_000)]
    pub reply_timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a Lua state.
    Create {
        name: String,
        /// Instructions one entry into the state may execute (maxruns).
        #[arg(long, default_value_t = DEFAULT_MAX_RUNS)]
        instructions: u32,
        /// Bytes the state may allocate (maxalloc).
        #[arg(long, default_value_t = DEFAULT_MAX_ALLOC_BYTES as u32)]
        memory: u32,
        /// Load the debug library into the state (flag "d").
        #[arg(long)]
        debug: bool,
    },
    /// Destroy a Lua state.
    Destroy { name: String },
    /// List the states.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a Lua chunk in a state.
    Execute {
        name: String,
        /// File holding the chunk ("-" for standard input).
        #[arg(required_unless_present = "code", conflicts_with = "code")]
        file: Option<PathBuf>,
        /// The chunk itself.
        #[arg(short = 'e', long = "code")]
        code: Option<String>,
        /// Chunk name shown in Lua errors (default: "@FILE" or "=chunk").
        #[arg(long)]
        chunk_name: Option<String>,
    },
    /// Replace a state's code: the files run in order in a new state with the
    /// same name, limits and flags, which takes the old one's place (and its
    /// hooks) only if every file ran without error. Packets are decided by
    /// the old code or the new, never a mix; the old state's timers are
    /// cancelled. On an error nothing changes and the error is shown.
    Reload {
        name: String,
        /// Lua files, run in order (chunk names "@FILE").
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// An interactive Lua prompt into a state: lines run there as chunks
    /// (as `execute`), returned values are printed, multi-line chunks are
    /// completed as lua5.4's prompt does.
    Repl { name: String },
    /// Send a data message to a state's __receive_callback.
    Send {
        name: String,
        /// The bytes to send ("-" or absent: standard input).
        data: Option<String>,
        /// Milliseconds to wait for an error or an answer from the state.
        #[arg(long, default_value_t = 200)]
        wait: u32,
    },
    /// Receive data messages that states send with nf.netlink.
    Receive {
        /// Port id to listen on (states send to it); default: an automatic one.
        #[arg(long)]
        pid: Option<u32>,
        /// Milliseconds to wait for each message (default: forever).
        #[arg(long)]
        timeout: Option<u32>,
        /// Stop after this many messages.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Statistics per state (memory, instructions, calls, errors, timers) and
    /// per hook (packets, verdicts, errors, Lua time per packet).
    Stats {
        /// Only this state (and its hooks).
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Bind NFQUEUE queues to a state's function, remove or list such hooks.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Run a filter over a capture file, offline: no daemon, no root, no
    /// network. The scripts run in a fresh state with the daemon's engine,
    /// libraries and limits; each packet goes to FUNCTION as a hook would give
    /// it; time is the capture's (nf.time(), timers).
    Test(TestArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The capture: pcap or pcapng; Ethernet, raw IP or Linux cooked links.
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// A Lua file run in the state before the capture (repeatable; in order).
    #[arg(long = "script", value_name = "FILE", required = true)]
    pub scripts: Vec<PathBuf>,
    /// The function packets are given to.
    #[arg(long)]
    pub function: String,
    /// match: the function returns true/false; target: a verdict name.
    #[arg(long, value_enum, default_value_t = ModeArg::Match)]
    pub mode: ModeArg,
    /// As a stream hook (with --mode target): each TCP connection's payload
    /// reassembled per direction, the function's verdict deciding the
    /// connection.
    #[arg(long)]
    pub stream: bool,
    /// Bytes per direction a stream function sees (default 16384).
    #[arg(long, value_name = "BYTES", requires = "stream")]
    pub stream_depth: Option<u32>,
    /// Capture milliseconds a stream hook holds a packet for its connection's
    /// decision before giving up (the daemon's --stream-timeout-ms).
    #[arg(long, value_name = "MS", default_value_t = 5000, requires = "stream")]
    pub stream_timeout_ms: u64,
    /// Give Lua only the TCP payload (packets without one do not match).
    #[arg(long, conflicts_with = "stream")]
    pub tcp_payload: bool,
    /// Instructions one call may execute (maxruns).
    #[arg(long, default_value_t = DEFAULT_MAX_RUNS)]
    pub instructions: u32,
    /// Bytes the state may allocate (maxalloc).
    #[arg(long, default_value_t = DEFAULT_MAX_ALLOC_BYTES as u32)]
    pub memory: u32,
    /// Print one JSON object instead of a line per packet.
    #[arg(long)]
    pub json: bool,
    /// Write the packets the filter would have sent (nf.reply, packet:send)
    /// to this pcap file (raw IP).
    #[arg(long, value_name = "OUT")]
    pub write_pcap: Option<PathBuf>,
    /// Exit 1 unless exactly N packets got VERDICT (accept, drop, match,
    /// nomatch, continue, error, ...; "errors" counts failed calls and timers).
    #[arg(long, value_name = "VERDICT=N", value_parser = parse_expect)]
    pub expect: Vec<(String, u64)>,
}

fn parse_expect(text: &str) -> Result<(String, u64), String> {
    let (verdict, count) = text.split_once('=').ok_or_else(|| format!("expected VERDICT=N, got {text:?}"))?;
    let count = count.trim().parse().map_err(|_| format!("expected a count after '=', got {count:?}"))?;
    Ok((verdict.trim().to_owned(), count))
}

// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Bind a queue (or a balanced range) to `FUNCTION` of `STATE`, and print
    /// the iptables and nft rules that feed it.
    Add {
        /// Queue number, or FIRST:LAST for one worker per queue of a balanced range.
        #[arg(long)]
        queue: String,
        #[arg(long)]
        state: String,
        #[arg(long)]
        function: String,
        /// match: the function returns true/false and the packet is marked;
        /// target: the returned string is the verdict.
        #[arg(long, value_enum, default_value_t = ModeArg::Match)]
        mode: ModeArg,
        /// Give Lua only the TCP payload (packets without one do not match).
        #[arg(long)]
        tcp_payload: bool,
        /// Stream hook (with --mode target): the function sees each TCP
        /// connection's payload reassembled in order, per direction, and its
        /// "accept" or "drop" decides the whole connection; while it answers
        /// nothing the connection's data packets are held.
        #[arg(long)]
        stream: bool,
        /// Bytes per direction a stream hook's function sees (default 16384).
        #[arg(long, value_name = "BYTES", requires = "stream")]
        stream_depth: Option<u32>,
        /// Verdict when Lua fails: continue (fail-open), accept, drop.
        #[arg(long, value_enum, default_value_t = OnErrorArg::Continue)]
        on_error: OnErrorArg,
        /// What the kernel does with packets that do not fit in the queue:
        /// accept (fail-open: they pass unevaluated, so a blocklist can be
        /// outrun) or drop (fail-closed: legitimate traffic is lost under
        /// overload). With drop the printed rules also leave out
        /// --queue-bypass.
        #[arg(long, value_enum, default_value_t = OverflowArg::Accept)]
        overflow: OverflowArg,
        /// Mark bit meaning "evaluated by nflua".
        #[arg(long, default_value = "0x10000000")]
        eval_mark: String,
        /// Mark bit meaning "matched" (match mode).
        #[arg(long, default_value = "0x20000000")]
        match_mark: String,
        /// Chain the printed rules go to.
        #[arg(long, default_value = "INPUT")]
        chain: String,
        /// The operator's own iptables match, copied into the printed rules
        /// (e.g. "-p tcp --dport 80") and translated for the nft ones.
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        rule: String,
        /// What the printed match-mode rule does with matched packets.
        #[arg(long, default_value = "DROP")]
        target: String,
    },
    /// Remove the hook holding QUEUE.
    Del { queue: u16 },
    /// List hooks.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Match,
    Target,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OverflowArg {
    Accept,
    Drop,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnErrorArg {
    Continue,
    Accept,
    Drop,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks argument names (global ones against every subcommand's) here.
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
