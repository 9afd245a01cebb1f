//! What synod replicates: a multi-version key-value store that answers as
//! etcd's does, request for request.
//!
//! The [`Store`] is a deterministic state machine. The replicated log hands
//! it [`Command`]s in slot order, each with an [`ApplyContext`] carrying the
//! leader's time stamp; it answers with a [`Response`] (or a [`KvError`]
//! with etcd's text) and the watch [`Event`]s the command produced. It does
//! no IO, reads no clock, draws no random number and starts no thread, so
//! every replica that applies the same commands holds the same state, down
//! to the bytes of [`Store::snapshot`] and the [`Store::state_hash`].
//!
//! ```
//! use kv::{ApplyContext, Command, PutRequest, RangeRequest, Response, Store};
//!
//! let mut store = Store::default();
//! let ctx = ApplyContext { now_ms: 0 };
//! let put = Command::Put(PutRequest {
//!     key: b"greeting".to_vec(),
//!     value: b"hello".to_vec(),
//!     ..PutRequest::default()
//! });
//! // Commands travel through the log as bytes.
//! let entry = put.encode();
//! let applied = store.apply(&Command::decode(&entry)?, ctx)?;
//! let Response::Put(answer) = applied.response else { unreachable!() };
//! assert_eq!(answer.header.revision, 2); // a fresh store is at revision 1
//! assert_eq!(applied.events.len(), 1); // for the watch hub
//!
//! // Reads are not commands: the leader serves them at its applied point.
//! let read = store.range(&RangeRequest { key: b"greeting".to_vec(), ..RangeRequest::default() })?;
//! assert_eq!(read.kvs[0].value, b"hello");
//! assert_eq!(read.kvs[0].version, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A tour of the rooms:
//! - [`types`]: etcd's messages as plain structs, same field names.
//! - [`command`]: what goes into the log ([`Command`], [`ApplyContext`]) and
//!   what comes out ([`Response`], [`Applied`]).
//! - [`store`]: the multi-version index and revisions, the write path,
//!   compaction. Start here to see how a version is kept.
//! - [`range`]: `Range`: limit, count, older revisions, sort, filters.
//! - [`txn`]: `Put`, `DeleteRange` and `Txn`: compares, branches, nesting,
//!   etcd's duplicate-key rule.
//! - [`lease`]: leases with replicated time; the leader decides expiry.
//! - [`watch`]: replaying history and the [`WatchHub`] that routes events.
//! - [`session`]: exactly-once, the replicated `(client, seq)` table.
//! - `values` (private): the arena value bytes live in, and why.
//! - [`cluster`]: the member table etcd's Cluster API shows.
//! - [`snapshot`]: snapshot, restore and the state hash.
//! - [`codec`]: the compact, versioned binary form of commands.
//! - [`limits`] and [`error`]: etcd's limits, checks and error texts.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cluster;
pub mod codec;
pub mod command;
pub mod error;
mod history;
pub mod lease;
pub mod limits;
pub mod range;
pub mod session;
pub mod snapshot;
pub mod store;
pub mod txn;
pub mod types;
mod values;
pub mod watch;

pub use cluster::{
    ClusterError, ClusterMember, MemberChange, SetMembersRequest, SetMembersResponse,
};
pub use codec::{DecodeError, Fnv64};
pub use command::{
    Applied, ApplyContext, Command, LeaseExpireRequest, LeaseExpireResponse, LeaseRenewAllResponse,
    Response,
};
pub use error::{GrpcCode, KvError};
pub use limits::Limits;
pub use session::{ClientId, SESSION_WINDOW, SessionOutcome};
pub use snapshot::{CRC_TAG, SNAPSHOT_PIECE_BYTES, SnapshotError};
pub use store::Store;
pub use types::*;
pub use watch::{WatchHub, WatchId};
