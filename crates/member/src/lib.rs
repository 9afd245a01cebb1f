//! A synod member, sans-IO: the Multi-Paxos replica, the key-value store
//! and every decision a node makes around them, as one plain struct.
//!
//! ```text
//!  client requests ─┐                       ┌─► Ready: stages of
//!  Paxos messages  ─┤                       │     now-effects (sends, replies)
//!  peer messages   ─┼─►  Member ────────────┤     records (+ sync)
//!  ticks + clocks  ─┤   Replica + Store     │     after-effects
//!  snapshots       ─┘                       └─► checkpoints to save
//! ```
//!
//! The server's runtime carries out a [`Ready`] with sockets, files and
//! threads; the simulator carries out the very same batches with its
//! simulated network and disk. So forwarding to the leader, read-index
//! reads, lease expiry, held decisions, snapshot policy and watch routing
//! are run by every simulated seed, not only by real processes.
//!
//! Nothing here reads a clock, touches a socket or a file, spawns a task or
//! draws a random number of its own: time ([`Clock`]) and randomness (the
//! tick's word, the seed) are handed in.

mod held;
mod member;
pub mod peer;
pub mod ready;
mod request;
pub mod wire;

pub use held::COMMITS_HELD_MAX;
pub use member::{Clock, Config, Counters, Member, membership_of, splitmix64};
pub use peer::PeerMessage;
pub use ready::{Checkpoint, Effect, Ready, Stage};
pub use request::{MemberError, Query, Reply, Request};
