//! The protocol cores of synod, as pure state machines.
//!
//! Nothing in this crate reads a clock, spawns a task, touches a socket or a
//! file, or draws a random number of its own. Inputs are messages, ticks,
//! proposals and randomness handed in by the caller; outputs are messages to
//! send, records to persist and decisions to apply. The deterministic
//! simulator (`sim`) and the server drive exactly the same code.
//!
//! - [`ballot`]: proposal numbers.
//! - [`synod`]: single-decree Paxos (Lamport's Synod), one value, the
//!   textbook roles kept apart so the classic scenarios can be replayed.
//! - [`multi`]: Multi-Paxos, the replicated log synod runs on: a stable
//!   leader, pipelined and batched slots, read-index reads, catch-up.
#![deny(missing_docs)]

pub mod ballot;
pub mod multi;
pub mod synod;

pub use ballot::{Ballot, NodeId};
