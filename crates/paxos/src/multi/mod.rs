//! Multi-Paxos: the replicated log.
//!
//! Each [`Slot`] of the log is a single-decree Paxos instance; one
//! [`Replica`] plays proposer, acceptor and learner for all of them. A
//! replica that misses its leader's heartbeats stands for election: it runs
//! phase 1 once for every slot from its first unchosen slot on, adopts the
//! highest-ballot value reported for each slot, fills holes with
//! [`Value::Noop`], and from then on runs only phase 2, many slots in flight
//! and many commands per slot. Decisions reach every replica in a
//! [`Message::Commit`]; a lagging replica asks for the ones it missed.
//!
//! Driving a replica: feed it [`Replica::step`] (a message),
//! [`Replica::tick`] (time passing, with randomness), [`Replica::propose`]
//! and [`Replica::read`]; then carry out [`Replica::take_outputs`] in order,
//! honouring every [`Output::Persist`] as a barrier.

pub mod codec;
mod config;
mod durable;
pub mod membership;
mod message;
mod output;
mod replica;

pub use config::{Bug, Config};
pub use durable::{Durable, Record};
pub use membership::Membership;
pub use message::{
    AcceptedEntry, ClientId, Command, Envelope, Message, Reconfiguration, Slot, Value,
};
pub use output::{Output, ProposeError, ReadId};
pub use replica::{Compacted, Replica, Role};

use std::collections::BTreeMap;

/// Takes every entry of a slot-keyed map up to and including `slot` out of
/// it and returns them: how a compaction drops the log a snapshot covers,
/// handing it back so the caller decides where the freeing happens.
pub(crate) fn take_through<V>(map: &mut BTreeMap<Slot, V>, slot: Slot) -> BTreeMap<Slot, V> {
    let after = map.split_off(&(slot + 1));
    std::mem::replace(map, after)
}
