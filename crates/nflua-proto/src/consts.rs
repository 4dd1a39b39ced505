//! Limits and sizes of SPEC §2, each derived the way the original kernel
//! module derived it on 4 KiB pages, so the numbers are byte-exact.

/// Netlink protocol the daemon and clients speak on.
pub const NETLINK_USERSOCK: i32 = 2;
/// Port id the daemon binds unless told otherwise ("nflu" in ASCII).
pub const DEFAULT_PORT: u32 = 0x6E66_6C75;
/// Environment variable clients read to find a daemon on another port.
pub const PORT_ENV: &str = "NFLUA_PORT";

/// `NLMSG_ALIGNTO`.
pub const NLMSG_ALIGNTO: usize = 4;
/// `NLMSG_HDRLEN`: `struct nlmsghdr` is 16 bytes.
pub const NLMSG_HDRLEN: usize = 16;

/// `NLMSG_ALIGN(len)`.
pub const fn nlmsg_align(len: usize) -> usize {
    (len + NLMSG_ALIGNTO - 1) & !(NLMSG_ALIGNTO - 1)
}

/// `NLMSG_SPACE(len)`: header plus aligned payload.
pub const fn nlmsg_space(len: usize) -> usize {
    nlmsg_align(NLMSG_HDRLEN + len)
}

/// One datagram never exceeds a page.
pub const PAYLOAD_MAX: usize = 4096;
/// A script travels in at most this many fragments.
pub const MAX_FRAGMENTS: usize = 16;

/// State name field, NUL included: names are 1..=63 bytes.
pub const STATE_NAME_MAX: usize = 64;
/// Script name field, NUL included.
pub const SCRIPT_NAME_MAX: usize = 255;

/// `struct nflua_nl_fragment { seq, offset }`.
pub const FRAGMENT_LEN: usize = 8;
/// `struct nflua_nl_list { total, fragment }`.
pub const LIST_HEADER_LEN: usize = 4 + FRAGMENT_LEN;
/// `struct nflua_nl_destroy { name[64] }`.
pub const DESTROY_LEN: usize = STATE_NAME_MAX;
/// `struct nflua_nl_data { total, name[64] }`.
pub const DATA_HEADER_LEN: usize = 4 + STATE_NAME_MAX;
/// `struct nflua_nl_script { total, name[64], scriptname[255], pad[1], fragment }`.
pub const SCRIPT_HEADER_LEN: usize = 4 + STATE_NAME_MAX + SCRIPT_NAME_MAX + 1 + FRAGMENT_LEN;
/// Legacy state record: `name[64], maxalloc, curralloc`.
pub const STATE_RECORD_LEGACY_LEN: usize = STATE_NAME_MAX + 4 + 4;
/// Extended state record: legacy plus `maxruns, flags`.
pub const STATE_RECORD_EXT_LEN: usize = STATE_RECORD_LEGACY_LEN + 4 + 4;

/// Script bytes in one EXECUTE message (`nflua.fragsize`): 4096 − NLMSG_SPACE(332) = 3748.
pub const SCRIPT_FRAG_SIZE: usize = PAYLOAD_MAX - nlmsg_space(SCRIPT_HEADER_LEN);
/// Largest script: 3748 × 16 = 59968.
pub const SCRIPT_MAX: usize = SCRIPT_FRAG_SIZE * MAX_FRAGMENTS;
/// Record bytes in the first LIST reply message: 4096 − NLMSG_SPACE(12) = 4068.
pub const LIST_FRAG_SIZE: usize = PAYLOAD_MAX - nlmsg_space(LIST_HEADER_LEN);
/// Record bytes in a follow-up LIST message: 4096 − NLMSG_SPACE(8) = 4072.
pub const LIST_NEXT_FRAG_SIZE: usize = PAYLOAD_MAX - nlmsg_space(FRAGMENT_LEN);
/// Payload of one DATA message (`nflua.datamaxsize`): 4096 − NLMSG_SPACE(68) = 4012.
pub const DATA_MAX: usize = PAYLOAD_MAX - nlmsg_space(DATA_HEADER_LEN);
/// `nflua.maxstates`: as many legacy records as 16 × 4068 bytes hold, as the original.
pub const MAX_STATES: usize = LIST_FRAG_SIZE * MAX_FRAGMENTS / STATE_RECORD_LEGACY_LEN;

/// Smallest `maxalloc` a state may have.
pub const MIN_ALLOC_BYTES: usize = 32 * 1024;
/// `nflua.defaultmaxallocbytes`.
pub const DEFAULT_MAX_ALLOC_BYTES: usize = 64 * 1024;
/// `maxruns` given to states created by a legacy 72-byte CREATE unless the
/// daemon is told otherwise.
pub const DEFAULT_MAX_RUNS: u32 = 1_000_000;

/// Chunk name used when an EXECUTE carries an empty script name.
pub const DEFAULT_CHUNK_NAME: &str = "=chunk";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_match_the_spec_table() {
        assert_eq!(SCRIPT_HEADER_LEN, 332);
        assert_eq!(SCRIPT_FRAG_SIZE, 3748);
        assert_eq!(SCRIPT_MAX, 59968);
        assert_eq!(LIST_FRAG_SIZE, 4068);
        assert_eq!(LIST_NEXT_FRAG_SIZE, 4072);
        assert_eq!(DATA_MAX, 4012);
        assert_eq!(MAX_STATES, 904);
        assert_eq!(DATA_HEADER_LEN, 68);
        assert_eq!(STATE_RECORD_LEGACY_LEN, 72);
        assert_eq!(STATE_RECORD_EXT_LEN, 80);
        // SPEC §2 prints 1852204149 beside the hex; the hex ("nflu") is what it means.
        assert_eq!(DEFAULT_PORT, 1_852_206_197);
    }
}
