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
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}
