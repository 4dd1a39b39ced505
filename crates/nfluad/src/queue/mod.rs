//! Packet hooks: NFQUEUE queues bound to a state's function, one worker
//! thread per queue.

pub mod hooks;
pub mod verdict;
pub mod worker;
