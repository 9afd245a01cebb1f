//! etcd's v3 messages as plain Rust structs.
//!
//! Field names follow etcd's `rpc.proto` and `kv.proto` (snake_case), so a
//! reader who knows etcd's API finds the same words here and the server can
//! translate field by field. Where protobuf has a `oneof`, Rust has an enum.
//! The response headers carry only the revision: `cluster_id`, `member_id`
//! and `raft_term` belong to the server, which fills them in.

/// A store revision (etcd's `int64` revision): raised by one by every request
/// that changes a key; 0 means "none" or "current" depending on the field.
pub type Revision = i64;

/// A lease id (etcd's `int64` lease id); [`NO_LEASE`] means no lease.
pub type LeaseId = i64;

/// The lease id that means "no lease", as in etcd.
pub const NO_LEASE: LeaseId = 0;

/// One version of a key, as etcd's `mvccpb.KeyValue`: what reads return and
/// what watch events carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyValue {
    /// The key, arbitrary bytes.
    pub key: Vec<u8>,
    /// Revision of the last creation of this key (0 in a delete event).
    pub create_revision: Revision,
    /// Revision of the last modification of this key.
    pub mod_revision: Revision,
    /// Number of modifications since creation; 1 when just created, 0 in a
    /// delete event.
    pub version: i64,
    /// The value, arbitrary bytes.
    pub value: Vec<u8>,
    /// Lease attached to the key, or [`NO_LEASE`].
    pub lease: LeaseId,
}

/// What every response carries: the store revision the response reflects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The store revision after the request (for reads: the current one).
    pub revision: Revision,
}

/// How a range sorts its result (etcd's `RangeRequest.SortOrder`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order, ascending (the natural order of the index).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// What a range sorts by (etcd's `RangeRequest.SortTarget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// Read keys (etcd's `RangeRequest`).
///
/// `range_end` empty: the single `key`; `range_end` = `[0]`: every key
/// `>= key`; otherwise the half-open interval `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key (must not be empty).
    pub key: Vec<u8>,
    /// End of the range, exclusive; see the type's doc.
    pub range_end: Vec<u8>,
    /// At most this many keys; 0 or negative: no limit.
    pub limit: i64,
    /// Read at this revision; 0 or negative: the current revision.
    pub revision: Revision,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// etcd's serializable flag; the server decides how to read, the store
    /// ignores it.
    pub serializable: bool,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Drop keys whose mod revision is below this (0: no filter).
    pub min_mod_revision: Revision,
    /// Drop keys whose mod revision is above this (0: no filter).
    pub max_mod_revision: Revision,
    /// Drop keys whose create revision is below this (0: no filter).
    pub min_create_revision: Revision,
    /// Drop keys whose create revision is above this (0: no filter).
    pub max_create_revision: Revision,
}

/// The answer to a [`RangeRequest`] (etcd's `RangeResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// Header; its revision is the store's current revision.
    pub header: ResponseHeader,
    /// The keys found (none when `count_only`).
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` let through.
    pub more: bool,
    /// Number of keys in the range at the revision read, before `limit` and
    /// the min/max filters (as etcd counts).
    pub count: i64,
}

/// Write one key (etcd's `PutRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key (must not be empty).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Lease to attach, or [`NO_LEASE`] to detach any lease.
    pub lease: LeaseId,
    /// Return the previous key-value pair.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
}

/// The answer to a [`PutRequest`] (etcd's `PutResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// Header; the revision of the write.
    pub header: ResponseHeader,
    /// The previous pair, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// Delete a key or a range (etcd's `DeleteRangeRequest`); `key` and
/// `range_end` as in [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// First key (must not be empty).
    pub key: Vec<u8>,
    /// End of the range, exclusive; see [`RangeRequest`].
    pub range_end: Vec<u8>,
    /// Return the deleted pairs.
    pub prev_kv: bool,
}

/// The answer to a [`DeleteRangeRequest`] (etcd's `DeleteRangeResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// Header; the revision after the delete (unchanged if nothing matched).
    pub header: ResponseHeader,
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted pairs, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a [`Compare`] relates the key's field to the given value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareResult {
    /// Field == value.
    #[default]
    Equal,
    /// Field > value.
    Greater,
    /// Field < value.
    Less,
    /// Field != value.
    NotEqual,
}

/// Which field a [`Compare`] reads, with the value to compare against.
///
/// etcd's protobuf has a `target` enum and a `target_union` oneof that must
/// agree; here they are one enum, so they cannot disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The version (0 for a missing key).
    Version(i64),
    /// The create revision (0 for a missing key).
    CreateRevision(Revision),
    /// The mod revision (0 for a missing key).
    ModRevision(Revision),
    /// The value (a compare on a missing key's value is always false).
    Value(Vec<u8>),
    /// The lease (0 for a missing key or no lease).
    Lease(LeaseId),
}

impl Default for CompareTarget {
    fn default() -> Self {
        CompareTarget::Version(0)
    }
}

/// One condition of a transaction (etcd's `Compare`). With a `range_end`,
/// every key of the range must satisfy it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compare {
    /// The relation.
    pub result: CompareResult,
    /// The field and the value compared against.
    pub target: CompareTarget,
    /// The key (must not be empty).
    pub key: Vec<u8>,
    /// End of the range, as in [`RangeRequest`]; empty for one key.
    pub range_end: Vec<u8>,
}

/// One operation inside a transaction (etcd's `RequestOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// The answer to one [`RequestOp`] (etcd's `ResponseOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// Answer to a read.
    Range(RangeResponse),
    /// Answer to a write.
    Put(PutResponse),
    /// Answer to a delete.
    DeleteRange(DeleteRangeResponse),
    /// Answer to a nested transaction.
    Txn(TxnResponse),
}

/// An atomic if/then/else (etcd's `TxnRequest`): if every compare holds,
/// `success` runs, else `failure`; either way in one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// The conditions, all evaluated before any operation runs.
    pub compare: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Operations run otherwise.
    pub failure: Vec<RequestOp>,
}

/// The answer to a [`TxnRequest`] (etcd's `TxnResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Header; the revision after the transaction. Nested responses carry
    /// the same revision.
    pub header: ResponseHeader,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// Free history below a revision (etcd's `CompactionRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionRequest {
    /// Reads below this revision fail afterwards.
    pub revision: Revision,
    /// etcd's flag to wait for the backend; compaction here is immediate,
    /// so the flag changes nothing.
    pub physical: bool,
}

/// The answer to a [`CompactionRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionResponse {
    /// Header; the current revision (compaction does not raise it).
    pub header: ResponseHeader,
}

/// Create a lease (etcd's `LeaseGrantRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantRequest {
    /// Time to live in seconds (raised to the configured minimum).
    pub ttl: i64,
    /// Requested id; 0 lets the store choose one (deterministically).
    pub id: LeaseId,
}

/// The answer to a [`LeaseGrantRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    /// Header; the current revision.
    pub header: ResponseHeader,
    /// The granted id.
    pub id: LeaseId,
    /// The granted TTL in seconds.
    pub ttl: i64,
    /// etcd's (unused) error string; always empty.
    pub error: String,
}

/// Delete a lease and every key attached to it (etcd's `LeaseRevokeRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeRequest {
    /// The lease.
    pub id: LeaseId,
}

/// The answer to a [`LeaseRevokeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeResponse {
    /// Header; the revision after the attached keys were deleted.
    pub header: ResponseHeader,
}

/// Refresh a lease's TTL (etcd's `LeaseKeepAliveRequest`); the leader
/// proposes it with its time stamp.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseKeepAliveRequest {
    /// The lease.
    pub id: LeaseId,
}

/// The answer to a [`LeaseKeepAliveRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseKeepAliveResponse {
    /// Header; the current revision.
    pub header: ResponseHeader,
    /// The lease.
    pub id: LeaseId,
    /// The lease's granted TTL in seconds, now counting again from the start.
    pub ttl: i64,
}

/// Ask for a lease's remaining time (etcd's `LeaseTimeToLiveRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLiveRequest {
    /// The lease.
    pub id: LeaseId,
    /// Also list the attached keys.
    pub keys: bool,
}

/// The answer to a [`LeaseTimeToLiveRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLiveResponse {
    /// Header; the current revision.
    pub header: ResponseHeader,
    /// The lease.
    pub id: LeaseId,
    /// Remaining seconds (truncated), or -1 when the lease does not exist,
    /// as etcd answers.
    pub ttl: i64,
    /// The TTL the lease was granted with.
    pub granted_ttl: i64,
    /// Attached keys in key order, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// One lease in a [`LeaseLeasesResponse`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease id.
    pub id: LeaseId,
}

/// The list of leases (etcd's `LeaseLeasesResponse`), in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseLeasesResponse {
    /// Header; the current revision.
    pub header: ResponseHeader,
    /// Every lease.
    pub leases: Vec<LeaseStatus>,
}

/// Kind of a watch [`Event`] (etcd's `Event.EventType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventType {
    /// The key was written.
    #[default]
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as watchers receive it (etcd's `mvccpb.Event`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub r#type: EventType,
    /// The new version; for a delete only `key` and `mod_revision` are set.
    pub kv: KeyValue,
    /// The key as it was at `mod_revision - 1`, when it existed and that
    /// history is not compacted.
    pub prev_kv: Option<KeyValue>,
}

/// Event filters of a watch (etcd's `WatchCreateRequest.FilterType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFilter {
    /// Drop put events.
    NoPut,
    /// Drop delete events.
    NoDelete,
}

/// Start watching (etcd's `WatchCreateRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchCreateRequest {
    /// First key; empty means `[0]`, the smallest key, as in etcd.
    pub key: Vec<u8>,
    /// End of the range, as in [`RangeRequest`].
    pub range_end: Vec<u8>,
    /// First revision to deliver; 0: changes after the current revision.
    pub start_revision: Revision,
    /// etcd's periodic progress flag; left to the server.
    pub progress_notify: bool,
    /// Events to drop.
    pub filters: Vec<WatchFilter>,
    /// Deliver each event's previous key-value pair.
    pub prev_kv: bool,
    /// Requested watch id; 0 lets the hub choose.
    pub watch_id: i64,
    /// etcd's fragmenting flag; left to the server.
    pub fragment: bool,
}

/// A message to one watcher (etcd's `WatchResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// Header; the store revision when the response was made.
    pub header: ResponseHeader,
    /// The watcher.
    pub watch_id: i64,
    /// The response to a create.
    pub created: bool,
    /// The watcher is gone (cancelled, refused, or compacted).
    pub canceled: bool,
    /// Set when the watch asked for compacted history: the compacted revision.
    pub compact_revision: Revision,
    /// Why the watcher was cancelled, when etcd gives a reason.
    pub cancel_reason: String,
    /// Events, in revision order.
    pub events: Vec<Event>,
}
