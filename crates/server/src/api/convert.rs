//! Conversions between etcd's wire messages ([`crate::proto`]) and the key
//! value store's plain types ([`kv`]), both ways.
//!
//! - kv → proto is total: `From` impls. Response headers carry only the
//!   revision; the services fill in `cluster_id`, `member_id` and
//!   `raft_term` on the top-level header (nested transaction responses keep
//!   the revision alone, as etcd's do).
//! - proto → kv can fail where the wire carries an enum: an unknown value
//!   from the wire is a [`ConvertError`] (answered with
//!   `InvalidArgument`), never a panic. Messages without enums convert with
//!   `From`.
//!
//! Keys and values are arbitrary bytes and pass through untouched.

use kv::{
    Compare, CompareResult, CompareTarget, EventType, RequestOp, ResponseOp, SortOrder, SortTarget,
    WatchFilter,
};

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;

/// A wire message that does not map onto the store's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A range's sort order or sort target is not one etcd knows (etcd's
    /// `ErrGRPCInvalidSortOption`).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A transaction operation with no request in it; etcd answers this
    /// with `ErrGRPCKeyNotFound`.
    #[error("etcdserver: key not found")]
    EmptyRequestOp,
    /// An enum field holds a value etcd's protocol does not define.
    #[error("etcdserver: invalid {field}: {value}")]
    UnknownEnum {
        /// The field, e.g. "compare target".
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A response operation with no response in it (only when converting
    /// responses back from the wire).
    #[error("etcdserver: empty response operation")]
    EmptyResponseOp,
}

// ---------------------------------------------------------------------------
// Records: KeyValue and Event.
// ---------------------------------------------------------------------------

impl From<kv::KeyValue> for mvccpb::KeyValue {
    fn from(kv: kv::KeyValue) -> Self {
        mvccpb::KeyValue {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

impl From<mvccpb::KeyValue> for kv::KeyValue {
    fn from(kv: mvccpb::KeyValue) -> Self {
        kv::KeyValue {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

impl From<EventType> for mvccpb::event::EventType {
    fn from(t: EventType) -> Self {
        match t {
            EventType::Put => mvccpb::event::EventType::Put,
            EventType::Delete => mvccpb::event::EventType::Delete,
        }
    }
}

impl From<kv::Event> for mvccpb::Event {
    fn from(e: kv::Event) -> Self {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::from(e.r#type) as i32,
            kv: Some(e.kv.into()),
            prev_kv: e.prev_kv.map(Into::into),
        }
    }
}

impl TryFrom<mvccpb::Event> for kv::Event {
    type Error = ConvertError;

    fn try_from(e: mvccpb::Event) -> Result<Self, ConvertError> {
        let r#type = match mvccpb::event::EventType::try_from(e.r#type) {
            Ok(mvccpb::event::EventType::Put) => EventType::Put,
            Ok(mvccpb::event::EventType::Delete) => EventType::Delete,
            Err(_) => {
                return Err(ConvertError::UnknownEnum {
                    field: "event type",
                    value: e.r#type,
                });
            }
        };
        Ok(kv::Event {
            r#type,
            kv: e.kv.map(Into::into).unwrap_or_default(),
            prev_kv: e.prev_kv.map(Into::into),
        })
    }
}

// ---------------------------------------------------------------------------
// Headers.
// ---------------------------------------------------------------------------

impl From<kv::ResponseHeader> for pb::ResponseHeader {
    /// The revision alone; the service fills in the member's identity.
    fn from(h: kv::ResponseHeader) -> Self {
        pb::ResponseHeader {
            revision: h.revision,
            ..pb::ResponseHeader::default()
        }
    }
}

/// A header with only the revision, as nested responses carry it.
fn header(h: kv::ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(h.into())
}

/// The revision of an optional wire header (0 when absent).
fn revision_of(h: Option<pb::ResponseHeader>) -> kv::ResponseHeader {
    kv::ResponseHeader {
        revision: h.map_or(0, |h| h.revision),
    }
}

// ---------------------------------------------------------------------------
// Range.
// ---------------------------------------------------------------------------

fn sort_order_from_wire(v: i32) -> Result<SortOrder, ConvertError> {
    use pb::range_request::SortOrder as W;
    match W::try_from(v) {
        Ok(W::None) => Ok(SortOrder::None),
        Ok(W::Ascend) => Ok(SortOrder::Ascend),
        Ok(W::Descend) => Ok(SortOrder::Descend),
        Err(_) => Err(ConvertError::InvalidSortOption),
    }
}

fn sort_order_to_wire(o: SortOrder) -> i32 {
    use pb::range_request::SortOrder as W;
    match o {
        SortOrder::None => W::None as i32,
        SortOrder::Ascend => W::Ascend as i32,
        SortOrder::Descend => W::Descend as i32,
    }
}

fn sort_target_from_wire(v: i32) -> Result<SortTarget, ConvertError> {
    use pb::range_request::SortTarget as W;
    match W::try_from(v) {
        Ok(W::Key) => Ok(SortTarget::Key),
        Ok(W::Version) => Ok(SortTarget::Version),
        Ok(W::Create) => Ok(SortTarget::Create),
        Ok(W::Mod) => Ok(SortTarget::Mod),
        Ok(W::Value) => Ok(SortTarget::Value),
        Err(_) => Err(ConvertError::InvalidSortOption),
    }
}

fn sort_target_to_wire(t: SortTarget) -> i32 {
    use pb::range_request::SortTarget as W;
    match t {
        SortTarget::Key => W::Key as i32,
        SortTarget::Version => W::Version as i32,
        SortTarget::Create => W::Create as i32,
        SortTarget::Mod => W::Mod as i32,
        SortTarget::Value => W::Value as i32,
    }
}

impl TryFrom<pb::RangeRequest> for kv::RangeRequest {
    type Error = ConvertError;

    fn try_from(r: pb::RangeRequest) -> Result<Self, ConvertError> {
        Ok(kv::RangeRequest {
            sort_order: sort_order_from_wire(r.sort_order)?,
            sort_target: sort_target_from_wire(r.sort_target)?,
            key: r.key,
            range_end: r.range_end,
            limit: r.limit,
            revision: r.revision,
            serializable: r.serializable,
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod_revision: r.min_mod_revision,
            max_mod_revision: r.max_mod_revision,
            min_create_revision: r.min_create_revision,
            max_create_revision: r.max_create_revision,
        })
    }
}

impl From<kv::RangeRequest> for pb::RangeRequest {
    fn from(r: kv::RangeRequest) -> Self {
        pb::RangeRequest {
            key: r.key,
            range_end: r.range_end,
            limit: r.limit,
            revision: r.revision,
            sort_order: sort_order_to_wire(r.sort_order),
            sort_target: sort_target_to_wire(r.sort_target),
            serializable: r.serializable,
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod_revision: r.min_mod_revision,
            max_mod_revision: r.max_mod_revision,
            min_create_revision: r.min_create_revision,
            max_create_revision: r.max_create_revision,
        }
    }
}

impl From<kv::RangeResponse> for pb::RangeResponse {
    fn from(r: kv::RangeResponse) -> Self {
        pb::RangeResponse {
            header: header(r.header),
            kvs: r.kvs.into_iter().map(Into::into).collect(),
            more: r.more,
            count: r.count,
        }
    }
}

impl From<pb::RangeResponse> for kv::RangeResponse {
    fn from(r: pb::RangeResponse) -> Self {
        kv::RangeResponse {
            header: revision_of(r.header),
            kvs: r.kvs.into_iter().map(Into::into).collect(),
            more: r.more,
            count: r.count,
        }
    }
}

// ---------------------------------------------------------------------------
// Put and DeleteRange.
// ---------------------------------------------------------------------------

impl From<pb::PutRequest> for kv::PutRequest {
    fn from(r: pb::PutRequest) -> Self {
        kv::PutRequest {
            key: r.key,
            value: r.value,
            lease: r.lease,
            prev_kv: r.prev_kv,
            ignore_value: r.ignore_value,
            ignore_lease: r.ignore_lease,
        }
    }
}

impl From<kv::PutRequest> for pb::PutRequest {
    fn from(r: kv::PutRequest) -> Self {
        pb::PutRequest {
            key: r.key,
            value: r.value,
            lease: r.lease,
            prev_kv: r.prev_kv,
            ignore_value: r.ignore_value,
            ignore_lease: r.ignore_lease,
        }
    }
}

impl From<kv::PutResponse> for pb::PutResponse {
    fn from(r: kv::PutResponse) -> Self {
        pb::PutResponse {
            header: header(r.header),
            prev_kv: r.prev_kv.map(Into::into),
        }
    }
}

impl From<pb::PutResponse> for kv::PutResponse {
    fn from(r: pb::PutResponse) -> Self {
        kv::PutResponse {
            header: revision_of(r.header),
            prev_kv: r.prev_kv.map(Into::into),
        }
    }
}

impl From<pb::DeleteRangeRequest> for kv::DeleteRangeRequest {
    fn from(r: pb::DeleteRangeRequest) -> Self {
        kv::DeleteRangeRequest {
            key: r.key,
            range_end: r.range_end,
            prev_kv: r.prev_kv,
        }
    }
}

impl From<kv::DeleteRangeRequest> for pb::DeleteRangeRequest {
    fn from(r: kv::DeleteRangeRequest) -> Self {
        pb::DeleteRangeRequest {
            key: r.key,
            range_end: r.range_end,
            prev_kv: r.prev_kv,
        }
    }
}

impl From<kv::DeleteRangeResponse> for pb::DeleteRangeResponse {
    fn from(r: kv::DeleteRangeResponse) -> Self {
        pb::DeleteRangeResponse {
            header: header(r.header),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::DeleteRangeResponse> for kv::DeleteRangeResponse {
    fn from(r: pb::DeleteRangeResponse) -> Self {
        kv::DeleteRangeResponse {
            header: revision_of(r.header),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(Into::into).collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Txn: compares, operations, nested transactions.
// ---------------------------------------------------------------------------

impl TryFrom<pb::Compare> for Compare {
    type Error = ConvertError;

    /// etcd reads the compared value through the getter of `target`: a
    /// `target_union` of another kind (or none) compares against that
    /// target's zero value, exactly as etcd's generated getters answer.
    fn try_from(c: pb::Compare) -> Result<Self, ConvertError> {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let result = match R::try_from(c.result) {
            Ok(R::Equal) => CompareResult::Equal,
            Ok(R::Greater) => CompareResult::Greater,
            Ok(R::Less) => CompareResult::Less,
            Ok(R::NotEqual) => CompareResult::NotEqual,
            Err(_) => {
                return Err(ConvertError::UnknownEnum {
                    field: "compare result",
                    value: c.result,
                });
            }
        };
        let union = c.target_union;
        let target = match T::try_from(c.target) {
            Ok(T::Version) => CompareTarget::Version(match union {
                Some(U::Version(v)) => v,
                _ => 0,
            }),
            Ok(T::Create) => CompareTarget::CreateRevision(match union {
                Some(U::CreateRevision(v)) => v,
                _ => 0,
            }),
            Ok(T::Mod) => CompareTarget::ModRevision(match union {
                Some(U::ModRevision(v)) => v,
                _ => 0,
            }),
            Ok(T::Value) => CompareTarget::Value(match union {
                Some(U::Value(v)) => v,
                _ => Vec::new(),
            }),
            Ok(T::Lease) => CompareTarget::Lease(match union {
                Some(U::Lease(v)) => v,
                _ => 0,
            }),
            Err(_) => {
                return Err(ConvertError::UnknownEnum {
                    field: "compare target",
                    value: c.target,
                });
            }
        };
        Ok(Compare {
            result,
            target,
            key: c.key,
            range_end: c.range_end,
        })
    }
}

impl From<Compare> for pb::Compare {
    fn from(c: Compare) -> Self {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let result = match c.result {
            CompareResult::Equal => R::Equal,
            CompareResult::Greater => R::Greater,
            CompareResult::Less => R::Less,
            CompareResult::NotEqual => R::NotEqual,
        };
        let (target, union) = match c.target {
            CompareTarget::Version(v) => (T::Version, U::Version(v)),
            CompareTarget::CreateRevision(v) => (T::Create, U::CreateRevision(v)),
            CompareTarget::ModRevision(v) => (T::Mod, U::ModRevision(v)),
            CompareTarget::Value(v) => (T::Value, U::Value(v)),
            CompareTarget::Lease(v) => (T::Lease, U::Lease(v)),
        };
        pb::Compare {
            result: result as i32,
            target: target as i32,
            key: c.key,
            range_end: c.range_end,
            target_union: Some(union),
        }
    }
}

impl TryFrom<pb::RequestOp> for RequestOp {
    type Error = ConvertError;

    fn try_from(op: pb::RequestOp) -> Result<Self, ConvertError> {
        use pb::request_op::Request as W;
        match op.request {
            Some(W::RequestRange(r)) => Ok(RequestOp::Range(r.try_into()?)),
            Some(W::RequestPut(r)) => Ok(RequestOp::Put(r.into())),
            Some(W::RequestDeleteRange(r)) => Ok(RequestOp::DeleteRange(r.into())),
            Some(W::RequestTxn(r)) => Ok(RequestOp::Txn(r.try_into()?)),
            None => Err(ConvertError::EmptyRequestOp),
        }
    }
}

impl From<RequestOp> for pb::RequestOp {
    fn from(op: RequestOp) -> Self {
        use pb::request_op::Request as W;
        let request = match op {
            RequestOp::Range(r) => W::RequestRange(r.into()),
            RequestOp::Put(r) => W::RequestPut(r.into()),
            RequestOp::DeleteRange(r) => W::RequestDeleteRange(r.into()),
            RequestOp::Txn(r) => W::RequestTxn(r.into()),
        };
        pb::RequestOp {
            request: Some(request),
        }
    }
}

fn ops_from_wire(ops: Vec<pb::RequestOp>) -> Result<Vec<RequestOp>, ConvertError> {
    ops.into_iter().map(TryInto::try_into).collect()
}

impl TryFrom<pb::TxnRequest> for kv::TxnRequest {
    type Error = ConvertError;

    fn try_from(t: pb::TxnRequest) -> Result<Self, ConvertError> {
        Ok(kv::TxnRequest {
            compare: t
                .compare
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            success: ops_from_wire(t.success)?,
            failure: ops_from_wire(t.failure)?,
        })
    }
}

impl From<kv::TxnRequest> for pb::TxnRequest {
    fn from(t: kv::TxnRequest) -> Self {
        pb::TxnRequest {
            compare: t.compare.into_iter().map(Into::into).collect(),
            success: t.success.into_iter().map(Into::into).collect(),
            failure: t.failure.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<ResponseOp> for pb::ResponseOp {
    fn from(op: ResponseOp) -> Self {
        use pb::response_op::Response as W;
        let response = match op {
            ResponseOp::Range(r) => W::ResponseRange(r.into()),
            ResponseOp::Put(r) => W::ResponsePut(r.into()),
            ResponseOp::DeleteRange(r) => W::ResponseDeleteRange(r.into()),
            ResponseOp::Txn(r) => W::ResponseTxn(r.into()),
        };
        pb::ResponseOp {
            response: Some(response),
        }
    }
}

impl TryFrom<pb::ResponseOp> for ResponseOp {
    type Error = ConvertError;

    fn try_from(op: pb::ResponseOp) -> Result<Self, ConvertError> {
        use pb::response_op::Response as W;
        match op.response {
            Some(W::ResponseRange(r)) => Ok(ResponseOp::Range(r.into())),
            Some(W::ResponsePut(r)) => Ok(ResponseOp::Put(r.into())),
            Some(W::ResponseDeleteRange(r)) => Ok(ResponseOp::DeleteRange(r.into())),
            Some(W::ResponseTxn(r)) => Ok(ResponseOp::Txn(r.try_into()?)),
            None => Err(ConvertError::EmptyResponseOp),
        }
    }
}

impl From<kv::TxnResponse> for pb::TxnResponse {
    fn from(t: kv::TxnResponse) -> Self {
        pb::TxnResponse {
            header: header(t.header),
            succeeded: t.succeeded,
            responses: t.responses.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::TxnResponse> for kv::TxnResponse {
    type Error = ConvertError;

    fn try_from(t: pb::TxnResponse) -> Result<Self, ConvertError> {
        Ok(kv::TxnResponse {
            header: revision_of(t.header),
            succeeded: t.succeeded,
            responses: t
                .responses
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

// ---------------------------------------------------------------------------
// Compaction.
// ---------------------------------------------------------------------------

impl From<pb::CompactionRequest> for kv::CompactionRequest {
    fn from(r: pb::CompactionRequest) -> Self {
        kv::CompactionRequest {
            revision: r.revision,
            physical: r.physical,
        }
    }
}

impl From<kv::CompactionRequest> for pb::CompactionRequest {
    fn from(r: kv::CompactionRequest) -> Self {
        pb::CompactionRequest {
            revision: r.revision,
            physical: r.physical,
        }
    }
}

impl From<kv::CompactionResponse> for pb::CompactionResponse {
    fn from(r: kv::CompactionResponse) -> Self {
        pb::CompactionResponse {
            header: header(r.header),
        }
    }
}

impl From<pb::CompactionResponse> for kv::CompactionResponse {
    fn from(r: pb::CompactionResponse) -> Self {
        kv::CompactionResponse {
            header: revision_of(r.header),
        }
    }
}

// ---------------------------------------------------------------------------
// Leases.
// ---------------------------------------------------------------------------

impl From<pb::LeaseGrantRequest> for kv::LeaseGrantRequest {
    fn from(r: pb::LeaseGrantRequest) -> Self {
        kv::LeaseGrantRequest {
            ttl: r.ttl,
            id: r.id,
        }
    }
}

impl From<kv::LeaseGrantRequest> for pb::LeaseGrantRequest {
    fn from(r: kv::LeaseGrantRequest) -> Self {
        pb::LeaseGrantRequest {
            ttl: r.ttl,
            id: r.id,
        }
    }
}

impl From<kv::LeaseGrantResponse> for pb::LeaseGrantResponse {
    fn from(r: kv::LeaseGrantResponse) -> Self {
        pb::LeaseGrantResponse {
            header: header(r.header),
            id: r.id,
            ttl: r.ttl,
            error: r.error,
        }
    }
}

impl From<pb::LeaseGrantResponse> for kv::LeaseGrantResponse {
    fn from(r: pb::LeaseGrantResponse) -> Self {
        kv::LeaseGrantResponse {
            header: revision_of(r.header),
            id: r.id,
            ttl: r.ttl,
            error: r.error,
        }
    }
}

impl From<pb::LeaseRevokeRequest> for kv::LeaseRevokeRequest {
    fn from(r: pb::LeaseRevokeRequest) -> Self {
        kv::LeaseRevokeRequest { id: r.id }
    }
}

impl From<kv::LeaseRevokeRequest> for pb::LeaseRevokeRequest {
    fn from(r: kv::LeaseRevokeRequest) -> Self {
        pb::LeaseRevokeRequest { id: r.id }
    }
}

impl From<kv::LeaseRevokeResponse> for pb::LeaseRevokeResponse {
    fn from(r: kv::LeaseRevokeResponse) -> Self {
        pb::LeaseRevokeResponse {
            header: header(r.header),
        }
    }
}

impl From<pb::LeaseRevokeResponse> for kv::LeaseRevokeResponse {
    fn from(r: pb::LeaseRevokeResponse) -> Self {
        kv::LeaseRevokeResponse {
            header: revision_of(r.header),
        }
    }
}

impl From<pb::LeaseKeepAliveRequest> for kv::LeaseKeepAliveRequest {
    fn from(r: pb::LeaseKeepAliveRequest) -> Self {
        kv::LeaseKeepAliveRequest { id: r.id }
    }
}

impl From<kv::LeaseKeepAliveRequest> for pb::LeaseKeepAliveRequest {
    fn from(r: kv::LeaseKeepAliveRequest) -> Self {
        pb::LeaseKeepAliveRequest { id: r.id }
    }
}

impl From<kv::LeaseKeepAliveResponse> for pb::LeaseKeepAliveResponse {
    fn from(r: kv::LeaseKeepAliveResponse) -> Self {
        pb::LeaseKeepAliveResponse {
            header: header(r.header),
            id: r.id,
            ttl: r.ttl,
        }
    }
}

impl From<pb::LeaseKeepAliveResponse> for kv::LeaseKeepAliveResponse {
    fn from(r: pb::LeaseKeepAliveResponse) -> Self {
        kv::LeaseKeepAliveResponse {
            header: revision_of(r.header),
            id: r.id,
            ttl: r.ttl,
        }
    }
}

impl From<pb::LeaseTimeToLiveRequest> for kv::LeaseTimeToLiveRequest {
    fn from(r: pb::LeaseTimeToLiveRequest) -> Self {
        kv::LeaseTimeToLiveRequest {
            id: r.id,
            keys: r.keys,
        }
    }
}

impl From<kv::LeaseTimeToLiveRequest> for pb::LeaseTimeToLiveRequest {
    fn from(r: kv::LeaseTimeToLiveRequest) -> Self {
        pb::LeaseTimeToLiveRequest {
            id: r.id,
            keys: r.keys,
        }
    }
}

impl From<kv::LeaseTimeToLiveResponse> for pb::LeaseTimeToLiveResponse {
    fn from(r: kv::LeaseTimeToLiveResponse) -> Self {
        pb::LeaseTimeToLiveResponse {
            header: header(r.header),
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys,
        }
    }
}

impl From<pb::LeaseTimeToLiveResponse> for kv::LeaseTimeToLiveResponse {
    fn from(r: pb::LeaseTimeToLiveResponse) -> Self {
        kv::LeaseTimeToLiveResponse {
            header: revision_of(r.header),
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys,
        }
    }
}

impl From<kv::LeaseLeasesResponse> for pb::LeaseLeasesResponse {
    fn from(r: kv::LeaseLeasesResponse) -> Self {
        pb::LeaseLeasesResponse {
            header: header(r.header),
            leases: r
                .leases
                .into_iter()
                .map(|l| pb::LeaseStatus { id: l.id })
                .collect(),
        }
    }
}

impl From<pb::LeaseLeasesResponse> for kv::LeaseLeasesResponse {
    fn from(r: pb::LeaseLeasesResponse) -> Self {
        kv::LeaseLeasesResponse {
            header: revision_of(r.header),
            leases: r
                .leases
                .into_iter()
                .map(|l| kv::LeaseStatus { id: l.id })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Watch.
// ---------------------------------------------------------------------------

impl TryFrom<pb::WatchCreateRequest> for kv::WatchCreateRequest {
    type Error = ConvertError;

    fn try_from(r: pb::WatchCreateRequest) -> Result<Self, ConvertError> {
        use pb::watch_create_request::FilterType as F;
        let filters = r
            .filters
            .iter()
            .map(|&f| match F::try_from(f) {
                Ok(F::Noput) => Ok(WatchFilter::NoPut),
                Ok(F::Nodelete) => Ok(WatchFilter::NoDelete),
                Err(_) => Err(ConvertError::UnknownEnum {
                    field: "watch filter",
                    value: f,
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(kv::WatchCreateRequest {
            key: r.key,
            range_end: r.range_end,
            start_revision: r.start_revision,
            progress_notify: r.progress_notify,
            filters,
            prev_kv: r.prev_kv,
            watch_id: r.watch_id,
            fragment: r.fragment,
        })
    }
}

impl From<kv::WatchCreateRequest> for pb::WatchCreateRequest {
    fn from(r: kv::WatchCreateRequest) -> Self {
        use pb::watch_create_request::FilterType as F;
        pb::WatchCreateRequest {
            key: r.key,
            range_end: r.range_end,
            start_revision: r.start_revision,
            progress_notify: r.progress_notify,
            filters: r
                .filters
                .iter()
                .map(|f| match f {
                    WatchFilter::NoPut => F::Noput as i32,
                    WatchFilter::NoDelete => F::Nodelete as i32,
                })
                .collect(),
            prev_kv: r.prev_kv,
            watch_id: r.watch_id,
            fragment: r.fragment,
        }
    }
}

impl From<kv::WatchResponse> for pb::WatchResponse {
    fn from(r: kv::WatchResponse) -> Self {
        pb::WatchResponse {
            header: header(r.header),
            watch_id: r.watch_id,
            created: r.created,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: r.cancel_reason,
            fragment: false,
            events: r.events.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::WatchResponse> for kv::WatchResponse {
    type Error = ConvertError;

    /// The `fragment` flag is a transport detail and is dropped.
    fn try_from(r: pb::WatchResponse) -> Result<Self, ConvertError> {
        Ok(kv::WatchResponse {
            header: revision_of(r.header),
            watch_id: r.watch_id,
            created: r.created,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: r.cancel_reason,
            events: r
                .events
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nasty_bytes(i: u8) -> Vec<u8> {
        vec![0, i, 0xff, b'\n', 0x80, 0]
    }

    fn sample_txn(depth: u8) -> kv::TxnRequest {
        let mut success = vec![
            RequestOp::Range(kv::RangeRequest {
                key: nasty_bytes(depth),
                range_end: vec![0],
                limit: 3,
                revision: 7,
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Mod,
                serializable: true,
                keys_only: true,
                count_only: false,
                min_mod_revision: 1,
                max_mod_revision: 2,
                min_create_revision: 3,
                max_create_revision: 4,
            }),
            RequestOp::Put(kv::PutRequest {
                key: b"k".to_vec(),
                value: nasty_bytes(9),
                lease: 5,
                prev_kv: true,
                ignore_value: false,
                ignore_lease: false,
            }),
        ];
        if depth > 0 {
            success.push(RequestOp::Txn(sample_txn(depth - 1)));
        }
        kv::TxnRequest {
            compare: vec![
                Compare {
                    result: CompareResult::NotEqual,
                    target: CompareTarget::Value(nasty_bytes(1)),
                    key: b"a".to_vec(),
                    range_end: b"b".to_vec(),
                },
                Compare {
                    result: CompareResult::Greater,
                    target: CompareTarget::ModRevision(4),
                    key: b"a".to_vec(),
                    range_end: Vec::new(),
                },
                Compare {
                    result: CompareResult::Less,
                    target: CompareTarget::CreateRevision(9),
                    key: b"c".to_vec(),
                    range_end: Vec::new(),
                },
                Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Lease(11),
                    key: b"d".to_vec(),
                    range_end: Vec::new(),
                },
                Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Version(0),
                    key: b"e".to_vec(),
                    range_end: Vec::new(),
                },
            ],
            success,
            failure: vec![RequestOp::DeleteRange(kv::DeleteRangeRequest {
                key: nasty_bytes(2),
                range_end: vec![0xff],
                prev_kv: true,
            })],
        }
    }

    #[test]
    fn txn_request_round_trips_with_nesting() {
        let txn = sample_txn(3);
        let wire: pb::TxnRequest = txn.clone().into();
        let back = kv::TxnRequest::try_from(wire).expect("converts back");
        assert_eq!(back, txn);
    }

    #[test]
    fn unknown_enums_are_errors_not_panics() {
        let bad_sort = pb::RangeRequest {
            key: b"k".to_vec(),
            sort_order: 9,
            ..Default::default()
        };
        assert_eq!(
            kv::RangeRequest::try_from(bad_sort),
            Err(ConvertError::InvalidSortOption)
        );
        let bad_target = pb::RangeRequest {
            key: b"k".to_vec(),
            sort_target: -1,
            ..Default::default()
        };
        assert_eq!(
            kv::RangeRequest::try_from(bad_target),
            Err(ConvertError::InvalidSortOption)
        );
        let bad_compare = pb::Compare {
            target: 42,
            key: b"k".to_vec(),
            ..Default::default()
        };
        assert!(matches!(
            Compare::try_from(bad_compare),
            Err(ConvertError::UnknownEnum { value: 42, .. })
        ));
        let bad_result = pb::Compare {
            result: 42,
            key: b"k".to_vec(),
            ..Default::default()
        };
        assert!(Compare::try_from(bad_result).is_err());
        let bad_filter = pb::WatchCreateRequest {
            filters: vec![0, 7],
            ..Default::default()
        };
        assert!(kv::WatchCreateRequest::try_from(bad_filter).is_err());
        let bad_event = mvccpb::Event {
            r#type: 3,
            ..Default::default()
        };
        assert!(kv::Event::try_from(bad_event).is_err());
        // A nested bad sort deep inside a transaction is found too.
        let mut txn: pb::TxnRequest = sample_txn(2).into();
        let nested = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: b"x".to_vec(),
                    sort_order: 77,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        txn.failure.push(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(nested)),
        });
        assert_eq!(
            kv::TxnRequest::try_from(txn),
            Err(ConvertError::InvalidSortOption)
        );
        let empty_op = pb::TxnRequest {
            success: vec![pb::RequestOp { request: None }],
            ..Default::default()
        };
        assert_eq!(
            kv::TxnRequest::try_from(empty_op),
            Err(ConvertError::EmptyRequestOp)
        );
    }

    #[test]
    fn compare_reads_the_union_through_the_target_getter() {
        use pb::compare::{CompareTarget as T, TargetUnion as U};
        // Mismatched union: etcd's getter for the target answers zero.
        let c = pb::Compare {
            target: T::Version as i32,
            key: b"k".to_vec(),
            target_union: Some(U::Value(b"v".to_vec())),
            ..Default::default()
        };
        assert_eq!(
            Compare::try_from(c).expect("converts").target,
            CompareTarget::Version(0)
        );
        let c = pb::Compare {
            target: T::Value as i32,
            key: b"k".to_vec(),
            target_union: None,
            ..Default::default()
        };
        assert_eq!(
            Compare::try_from(c).expect("converts").target,
            CompareTarget::Value(Vec::new())
        );
    }

    #[test]
    fn watch_messages_round_trip() {
        let create = kv::WatchCreateRequest {
            key: nasty_bytes(3),
            range_end: vec![0],
            start_revision: 12,
            progress_notify: true,
            filters: vec![WatchFilter::NoDelete, WatchFilter::NoPut],
            prev_kv: true,
            watch_id: 99,
            fragment: true,
        };
        let wire: pb::WatchCreateRequest = create.clone().into();
        assert_eq!(kv::WatchCreateRequest::try_from(wire), Ok(create));

        let response = kv::WatchResponse {
            header: kv::ResponseHeader { revision: 8 },
            watch_id: 3,
            created: false,
            canceled: true,
            compact_revision: 5,
            cancel_reason: "why".into(),
            events: vec![
                kv::Event {
                    r#type: EventType::Put,
                    kv: kv::KeyValue {
                        key: nasty_bytes(4),
                        create_revision: 2,
                        mod_revision: 8,
                        version: 3,
                        value: nasty_bytes(5),
                        lease: 7,
                    },
                    prev_kv: Some(kv::KeyValue {
                        key: nasty_bytes(4),
                        ..Default::default()
                    }),
                },
                kv::Event {
                    r#type: EventType::Delete,
                    kv: kv::KeyValue {
                        key: b"gone".to_vec(),
                        mod_revision: 8,
                        ..Default::default()
                    },
                    prev_kv: None,
                },
            ],
        };
        let wire: pb::WatchResponse = response.clone().into();
        assert_eq!(wire.events[1].r#type, 1);
        assert_eq!(kv::WatchResponse::try_from(wire), Ok(response));
    }

    #[test]
    fn txn_response_round_trips() {
        let inner = kv::TxnResponse {
            header: kv::ResponseHeader { revision: 4 },
            succeeded: false,
            responses: vec![ResponseOp::DeleteRange(kv::DeleteRangeResponse {
                header: kv::ResponseHeader { revision: 4 },
                deleted: 2,
                prev_kvs: vec![kv::KeyValue::default()],
            })],
        };
        let outer = kv::TxnResponse {
            header: kv::ResponseHeader { revision: 4 },
            succeeded: true,
            responses: vec![
                ResponseOp::Range(kv::RangeResponse {
                    header: kv::ResponseHeader { revision: 4 },
                    kvs: vec![kv::KeyValue {
                        key: vec![0],
                        ..Default::default()
                    }],
                    more: true,
                    count: 9,
                }),
                ResponseOp::Put(kv::PutResponse {
                    header: kv::ResponseHeader { revision: 4 },
                    prev_kv: None,
                }),
                ResponseOp::Txn(inner),
            ],
        };
        let wire: pb::TxnResponse = outer.clone().into();
        assert_eq!(kv::TxnResponse::try_from(wire), Ok(outer));
    }
}
