//! Wire numbers of Netlink, nfnetlink and nfnetlink_queue, copied from the Linux UAPI headers
//! (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`, `nfnetlink_queue.h`,
//! `nfnetlink_conntrack.h`). Kept here, not taken from `libc`, so the pure encoding and decoding
//! modules do not depend on the C library.

// linux/netlink.h
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLMSG_NOOP: u16 = 0x1;
pub(crate) const NLMSG_ERROR: u16 = 0x2;
pub(crate) const NLMSG_DONE: u16 = 0x3;
pub(crate) const NLMSG_OVERRUN: u16 = 0x4;
pub(crate) const NLA_HDRLEN: usize = 4;
pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub(crate) const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

// linux/netfilter/nfnetlink.h: struct nfgenmsg and the subsystem id.
pub(crate) const NFGENMSG_LEN: usize = 4;
pub(crate) const AF_UNSPEC: u8 = 0;
pub(crate) const NFNETLINK_V0: u8 = 0;
pub(crate) const NFNL_SUBSYS_QUEUE: u16 = 3;

// nfnetlink_queue.h: enum nfqnl_msg_types, combined with the subsystem as (subsys << 8) | op.
pub(crate) const NFQNL_MSG_PACKET: u16 = NFNL_SUBSYS_QUEUE << 8; // op 0
pub(crate) const NFQNL_MSG_VERDICT: u16 = (NFNL_SUBSYS_QUEUE << 8) | 1;
pub(crate) const NFQNL_MSG_CONFIG: u16 = (NFNL_SUBSYS_QUEUE << 8) | 2;
pub(crate) const NFQNL_MSG_VERDICT_BATCH: u16 = (NFNL_SUBSYS_QUEUE << 8) | 3;

// enum nfqnl_attr_type (attributes of packet and verdict messages).
pub(crate) const NFQA_PACKET_HDR: u16 = 1;
pub(crate) const NFQA_VERDICT_HDR: u16 = 2;
pub(crate) const NFQA_MARK: u16 = 3;
pub(crate) const NFQA_IFINDEX_INDEV: u16 = 5;
pub(crate) const NFQA_IFINDEX_OUTDEV: u16 = 6;
pub(crate) const NFQA_HWADDR: u16 = 9;
pub(crate) const NFQA_PAYLOAD: u16 = 10;
pub(crate) const NFQA_CT: u16 = 11;
pub(crate) const NFQA_SKB_INFO: u16 = 14;
/// NFQA_SKB_INFO bit: the checksum is not filled in yet (CHECKSUM_PARTIAL).
pub(crate) const NFQA_SKB_CSUMNOTREADY: u32 = 1 << 0;

// enum nfqnl_attr_config (attributes of config messages).
pub(crate) const NFQA_CFG_CMD: u16 = 1;
pub(crate) const NFQA_CFG_PARAMS: u16 = 2;
pub(crate) const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
pub(crate) const NFQA_CFG_MASK: u16 = 4;
pub(crate) const NFQA_CFG_FLAGS: u16 = 5;

// enum nfqnl_msg_config_cmds
pub(crate) const NFQNL_CFG_CMD_BIND: u8 = 1;
pub(crate) const NFQNL_CFG_CMD_UNBIND: u8 = 2;

// enum nfqnl_config_mode
pub(crate) const NFQNL_COPY_PACKET: u8 = 2;

// NFQA_CFG_FLAGS bits
pub(crate) const NFQA_CFG_F_FAIL_OPEN: u32 = 1 << 0;
pub(crate) const NFQA_CFG_F_CONNTRACK: u32 = 1 << 1;
pub(crate) const NFQA_CFG_F_GSO: u32 = 1 << 2;

/// The largest copy range the kernel honours: the payload attribute's 16-bit length must also
/// hold its 4-byte header (`NFQNL_MAX_COPY_RANGE = 0xffff - NLA_HDRLEN`). Larger requests, and 0,
/// are clamped to it by the kernel.
pub(crate) const MAX_COPY_RANGE: u32 = 0xFFFF - NLA_HDRLEN as u32;

// nfnetlink_conntrack.h: enum ctattr_type
pub(crate) const CTA_ID: u16 = 12;

// nfnetlink_acct.h: named packet counters (the `nfacct` match of iptables counts into them).
pub(crate) const NFNL_SUBSYS_ACCT: u16 = 7;
pub(crate) const NFNL_MSG_ACCT_NEW: u16 = NFNL_SUBSYS_ACCT << 8; // op 0
pub(crate) const NFNL_MSG_ACCT_GET_CTRZERO: u16 = (NFNL_SUBSYS_ACCT << 8) | 2;
pub(crate) const NFACCT_NAME: u16 = 1;
pub(crate) const NFACCT_PKTS: u16 = 2;
/// Longest counter name, with its terminating NUL.
pub const NFACCT_NAME_MAX: usize = 32;
pub(crate) const NLM_F_CREATE: u16 = 0x400;

// ctnetlink (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
pub(crate) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(crate) const IPCTNL_MSG_CT_NEW: u16 = NFNL_SUBSYS_CTNETLINK << 8; // op 0
pub(crate) const IPCTNL_MSG_CT_GET: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | 1;
pub(crate) const IPCTNL_MSG_CT_DELETE: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | 2;
pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
pub(crate) const CTA_STATUS: u16 = 3;
pub(crate) const CTA_PROTOINFO: u16 = 4;
pub(crate) const CTA_TIMEOUT: u16 = 7;
pub(crate) const CTA_MARK: u16 = 8;
pub(crate) const CTA_COUNTERS_ORIG: u16 = 9;
pub(crate) const CTA_COUNTERS_REPLY: u16 = 10;
pub(crate) const CTA_TUPLE_IP: u16 = 1;
pub(crate) const CTA_TUPLE_PROTO: u16 = 2;
pub(crate) const CTA_IP_V4_SRC: u16 = 1;
pub(crate) const CTA_IP_V4_DST: u16 = 2;
pub(crate) const CTA_IP_V6_SRC: u16 = 3;
pub(crate) const CTA_IP_V6_DST: u16 = 4;
pub(crate) const CTA_PROTO_NUM: u16 = 1;
pub(crate) const CTA_PROTO_SRC_PORT: u16 = 2;
pub(crate) const CTA_PROTO_DST_PORT: u16 = 3;
pub(crate) const CTA_PROTOINFO_TCP: u16 = 1;
pub(crate) const CTA_PROTOINFO_TCP_STATE: u16 = 1;
pub(crate) const CTA_COUNTERS_PACKETS: u16 = 1;
pub(crate) const CTA_COUNTERS_BYTES: u16 = 2;
