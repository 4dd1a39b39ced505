//! [`instances`]: the kernel's view of every bound queue of this network namespace, from
//! `/proc/net/netfilter/nfnetlink_queue`.
//!
//! One line per queue: number, peer port id, `queue_total` (packets waiting for a verdict, those
//! the consumer holds included), copy mode, copy range, `queue_dropped` (dropped because the
//! queue was full and not fail-open), `queue_user_dropped` (dropped because the consumer's socket
//! could not take them, not fail-open), the id of the last packet queued, and a constant 1.
//! Packets a fail-open queue accepts unqueued are in none of these: with the queue full they do
//! not even get an id.

use std::io;

/// One queue as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueInstance {
    pub queue: u16,
    pub peer_port: u32,
    /// Packets queued and not yet given a verdict.
    pub backlog: u32,
    /// Dropped: the queue was full (fail-closed queues only).
    pub dropped_full: u32,
    /// Dropped: the consumer's socket buffer was full (fail-closed queues only).
    pub dropped_socket: u32,
    /// Id of the last packet queued (ids start at 1 when the queue is bound).
    pub id_sequence: u32,
}

pub const PROC_PATH: &str = "/proc/net/netfilter/nfnetlink_queue";

/// Every bound queue of the caller's network namespace. No file (nfnetlink_queue not loaded, no
/// queue ever bound) reads as no queues.
pub fn instances() -> io::Result<Vec<QueueInstance>> {
    match std::fs::read_to_string(PROC_PATH) {
        Ok(text) => Ok(parse_instances(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The lines that parse; others (a format this code does not know) are skipped.
pub fn parse_instances(text: &str) -> Vec<QueueInstance> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
            if f.len() < 8 {
                return None;
            }
            Some(QueueInstance {
                queue: u16::try_from(f[0]).ok()?,
                peer_port: u32::try_from(f[1]).ok()?,
                backlog: u32::try_from(f[2]).ok()?,
                dropped_full: u32::try_from(f[5]).ok()?,
                dropped_socket: u32::try_from(f[6]).ok()?,
                id_sequence: u32::try_from(f[7]).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines_parse() {
        let text = "    0 2846821471  4096 2 65531     0     0  1048576  1\n    7   1234     0 2 65531     3     4        9  1\ngarbage\n";
        let got = parse_instances(text);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            QueueInstance {
                queue: 0,
                peer_port: 2846821471,
                backlog: 4096,
                dropped_full: 0,
                dropped_socket: 0,
                id_sequence: 1048576
            }
        );
        assert_eq!(
            (got[1].queue, got[1].dropped_full, got[1].dropped_socket, got[1].id_sequence),
            (7, 3, 4, 9)
        );
    }
}
