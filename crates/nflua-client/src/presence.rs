//! Whether a Netlink port is still bound, read from `/proc/net/netlink`
//! (the sockets of this network namespace). A silent daemon and a dead one
//! look the same on the socket — Netlink tells a waiting receiver nothing
//! when its peer closes — so a client that waits long asks here.

use nflua_proto::consts::NETLINK_USERSOCK;

/// The namespace of the calling thread, which may differ from the process's
/// (a thread that entered another one with `setns`); the older path as a
/// fallback.
const TABLES: [&str; 2] = ["/proc/thread-self/net/netlink", "/proc/net/netlink"];

/// `Some(true)` when a `NETLINK_USERSOCK` socket holds `port`, `Some(false)`
/// when none does, `None` when the table cannot be read (no /proc).
pub fn usersock_port_bound(port: u32) -> Option<bool> {
    TABLES.iter().find_map(|path| std::fs::read_to_string(path).ok()).map(|table| table_holds(&table, port))
}

/// The table's columns: `sk Eth Pid Groups ...`, Eth and Pid in decimal.
fn table_holds(table: &str, port: u32) -> bool {
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace().skip(1);
        let proto = cols.next().and_then(|c| c.parse::<u32>().ok());
        let pid = cols.next().and_then(|c| c.parse::<u32>().ok());
        proto == u32::try_from(NETLINK_USERSOCK).ok() && pid == Some(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
00000000ce9ebdd8 0   0          00000000 0        0        0     2        0        4
0000000012345678 2   1852206197 00000000 0        0        0     2        0        900
0000000012345679 0   4242       00000000 0        0        0     2        0        901
";

    #[test]
    fn finds_usersock_ports_only() {
        assert!(table_holds(SAMPLE, 0x6E66_6C75));
        // Port 4242 exists, but on another protocol.
        assert!(!table_holds(SAMPLE, 4242));
        assert!(!table_holds(SAMPLE, 1));
    }

    #[test]
    fn a_bound_socket_is_seen() {
        let sock = crate::socket::NetlinkSocket::bind(crate::socket::Port::Auto, 0).unwrap();
        assert_eq!(usersock_port_bound(sock.port()), Some(true));
        let port = sock.port();
        drop(sock);
        assert_eq!(usersock_port_bound(port), Some(false));
    }
}
