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
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
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
