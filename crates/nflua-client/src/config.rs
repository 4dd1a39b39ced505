//! Where the daemon is and whom to believe.

use nflua_proto::consts::{DEFAULT_PORT, PORT_ENV};

/// Client settings shared by control and data sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The daemon's port id.
    pub daemon_port: u32,
    /// Replies are accepted only from these uids (SPEC §2: root, or the uid
    /// the daemon is known to run as), so a process squatting the daemon's
    /// port is not trusted.
    pub trusted_uids: Vec<u32>,
}

/// Environment variable naming an extra uid the daemon runs as.
pub const DAEMON_UID_ENV: &str = "NFLUA_DAEMON_UID";

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { daemon_port: DEFAULT_PORT, trusted_uids: vec![0] }
    }
}

impl ClientConfig {
    /// Defaults, overridden by `NFLUA_PORT` and `NFLUA_DAEMON_UID` when set
    /// and valid.
    pub fn from_env() -> ClientConfig {
        let mut config = ClientConfig::default();
        if let Some(port) = std::env::var(PORT_ENV).ok().and_then(|v| parse_port(&v)) {
            config.daemon_port = port;
        }
        if let Some(uid) = std::env::var(DAEMON_UID_ENV).ok().and_then(|v| v.trim().parse().ok()) {
            config.trusted_uids.push(uid);
        }
        config
    }

    /// Same settings, other daemon port.
    pub fn with_port(mut self, port: u32) -> ClientConfig {
        self.daemon_port = port;
        self
    }

    pub(crate) fn trusts(&self, uid: u32) -> bool {
        self.trusted_uids.contains(&uid)
    }
}

pub use nflua_netlink::parse_port;
