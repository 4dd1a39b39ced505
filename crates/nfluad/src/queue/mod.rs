//! Packet hooks: NFQUEUE queues bound to a state's function, one worker
//! thread per queue, and a monitor counting what passes them unevaluated.

pub mod bypass;
pub mod hooks;
pub mod stream;
pub mod verdict;
pub mod worker;
