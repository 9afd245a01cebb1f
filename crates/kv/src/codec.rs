//! The binary form of commands and responses, for log entries, the session
//! table in snapshots, and the state hash.
//!
//! Hand-written and compact: integers are LEB128 varints (signed ones
//! zig-zag encoded), byte strings and lists are a varint length then the
//! items, enums and options a one-byte tag. A command starts with a format
//! byte ([`COMMAND_FORMAT`]) so the encoding can evolve while old log
//! entries stay readable. Decoding never panics and never allocates more
//! than the input could hold: every length is checked against the bytes
//! left, nesting is bounded by [`MAX_NESTING`], and trailing bytes are an
//! error.

use crate::cluster::{SetMembersRequest, SetMembersResponse};
use crate::command::{
    Command, LeaseExpireRequest, LeaseExpireResponse, LeaseRenewAllResponse, Response,
};
use crate::error::KvError;
use crate::types::{
    CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    SortOrder, SortTarget, TxnRequest, TxnResponse,
};

/// The format byte every encoded command and response starts with.
pub const COMMAND_FORMAT: u8 = 1;

/// Deepest nesting of transactions the decoder accepts; above any depth
/// etcd's operation limit allows (one level per operation at most), and
/// low enough that recursion cannot exhaust a thread's stack.
pub const MAX_NESTING: u32 = 512;

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("input ends early")]
    Truncated,
    /// The format byte is not one this version reads.
    #[error("unsupported format {0}")]
    UnsupportedFormat(u8),
    /// An enum or option tag out of range.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// The field being decoded.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A varint longer than 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A length larger than the bytes left could hold.
    #[error("length {0} exceeds the input")]
    LengthOutOfRange(u64),
    /// A number outside its field's range.
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    /// Transactions nested deeper than [`MAX_NESTING`].
    #[error("nesting deeper than {MAX_NESTING}")]
    TooDeep,
    /// Bytes left after the value.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// Where encoded bytes go: a buffer, a byte counter, or a hasher.
pub trait Sink {
    /// Takes the next bytes.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts bytes instead of keeping them, to size a command cheaply.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// 64-bit FNV-1a: a hash that is the same in every process and on every
/// platform (unlike std's keyed hasher), for state digests.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(pub u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Sink for Fnv64 {
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Writes primitives to a sink.
pub(crate) struct Enc<'a, S: Sink + ?Sized> {
    sink: &'a mut S,
}

impl<'a, S: Sink + ?Sized> Enc<'a, S> {
    pub(crate) fn new(sink: &'a mut S) -> Self {
        Enc { sink }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.sink.put(&[v]);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    pub(crate) fn u64(&mut self, mut v: u64) {
        let mut buf = [0u8; 10];
        let mut n = 0;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                buf[n] = byte;
                n += 1;
                break;
            }
            buf[n] = byte | 0x80;
            n += 1;
        }
        self.sink.put(&buf[..n]);
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub(crate) fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.sink.put(b);
    }

    pub(crate) fn raw(&mut self, b: &[u8]) {
        self.sink.put(b);
    }
}

/// Reads primitives from a byte slice, checking everything.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    depth: u32,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Dec { buf, depth: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what: "bool", tag }),
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u64()?).map_err(|_| DecodeError::OutOfRange("u32"))
    }

    /// A count of items, each at least `min_item_bytes` long: refused if the
    /// input cannot hold that many, so a forged count allocates nothing.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes.max(1)) <= self.remaining());
        fits.ok_or(DecodeError::LengthOutOfRange(n))
    }

    /// Length-prefixed UTF-8.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.slice()?.to_vec()).map_err(|_| DecodeError::OutOfRange("utf-8"))
    }

    pub(crate) fn slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count(1)?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        Ok(self.slice()?.to_vec())
    }

    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    fn enter(&mut self) -> Result<(), DecodeError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(DecodeError::TooDeep);
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// A value with a binary form.
pub(crate) trait Wire: Sized {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>);
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError>;
}

pub(crate) fn enc_vec<T: Wire, S: Sink + ?Sized>(e: &mut Enc<'_, S>, items: &[T]) {
    e.len(items.len());
    for item in items {
        item.encode(e);
    }
}

pub(crate) fn dec_vec<T: Wire>(d: &mut Dec<'_>) -> Result<Vec<T>, DecodeError> {
    let n = d.count(1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(T::decode(d)?);
    }
    Ok(out)
}

fn enc_opt<T: Wire, S: Sink + ?Sized>(e: &mut Enc<'_, S>, v: &Option<T>) {
    match v {
        None => e.u8(0),
        Some(x) => {
            e.u8(1);
            x.encode(e);
        }
    }
}

fn dec_opt<T: Wire>(d: &mut Dec<'_>) -> Result<Option<T>, DecodeError> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(T::decode(d)?)),
        tag => Err(DecodeError::UnknownTag {
            what: "option",
            tag,
        }),
    }
}

impl Wire for Vec<u8> {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.bytes(self);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        d.bytes()
    }
}

impl Wire for i64 {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.i64(*self);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        d.i64()
    }
}

impl Wire for ResponseHeader {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.i64(self.revision);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(ResponseHeader { revision: d.i64()? })
    }
}

impl Wire for KeyValue {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.bytes(&self.key);
        e.i64(self.create_revision);
        e.i64(self.mod_revision);
        e.i64(self.version);
        e.bytes(&self.value);
        e.i64(self.lease);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(KeyValue {
            key: d.bytes()?,
            create_revision: d.i64()?,
            mod_revision: d.i64()?,
            version: d.i64()?,
            value: d.bytes()?,
            lease: d.i64()?,
        })
    }
}

impl Wire for RangeRequest {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.bytes(&self.key);
        e.bytes(&self.range_end);
        e.i64(self.limit);
        e.i64(self.revision);
        e.u8(match self.sort_order {
            SortOrder::None => 0,
            SortOrder::Ascend => 1,
            SortOrder::Descend => 2,
        });
        e.u8(match self.sort_target {
            SortTarget::Key => 0,
            SortTarget::Version => 1,
            SortTarget::Create => 2,
            SortTarget::Mod => 3,
            SortTarget::Value => 4,
        });
        let flags = u8::from(self.serializable)
            | u8::from(self.keys_only) << 1
            | u8::from(self.count_only) << 2;
        e.u8(flags);
        e.i64(self.min_mod_revision);
        e.i64(self.max_mod_revision);
        e.i64(self.min_create_revision);
        e.i64(self.max_create_revision);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let key = d.bytes()?;
        let range_end = d.bytes()?;
        let limit = d.i64()?;
        let revision = d.i64()?;
        let sort_order = match d.u8()? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "sort_order",
                    tag,
                });
            }
        };
        let sort_target = match d.u8()? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "sort_target",
                    tag,
                });
            }
        };
        let flags = d.u8()?;
        if flags > 0b111 {
            return Err(DecodeError::UnknownTag {
                what: "range flags",
                tag: flags,
            });
        }
        Ok(RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            serializable: flags & 1 != 0,
            keys_only: flags & 2 != 0,
            count_only: flags & 4 != 0,
            min_mod_revision: d.i64()?,
            max_mod_revision: d.i64()?,
            min_create_revision: d.i64()?,
            max_create_revision: d.i64()?,
        })
    }
}

impl Wire for RangeResponse {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        self.header.encode(e);
        enc_vec(e, &self.kvs);
        e.bool(self.more);
        e.i64(self.count);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(RangeResponse {
            header: ResponseHeader::decode(d)?,
            kvs: dec_vec(d)?,
            more: d.bool()?,
            count: d.i64()?,
        })
    }
}

impl Wire for PutRequest {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.bytes(&self.key);
        e.bytes(&self.value);
        e.i64(self.lease);
        let flags = u8::from(self.prev_kv)
            | u8::from(self.ignore_value) << 1
            | u8::from(self.ignore_lease) << 2;
        e.u8(flags);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let key = d.bytes()?;
        let value = d.bytes()?;
        let lease = d.i64()?;
        let flags = d.u8()?;
        if flags > 0b111 {
            return Err(DecodeError::UnknownTag {
                what: "put flags",
                tag: flags,
            });
        }
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv: flags & 1 != 0,
            ignore_value: flags & 2 != 0,
            ignore_lease: flags & 4 != 0,
        })
    }
}

impl Wire for PutResponse {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        self.header.encode(e);
        enc_opt(e, &self.prev_kv);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(PutResponse {
            header: ResponseHeader::decode(d)?,
            prev_kv: dec_opt(d)?,
        })
    }
}

impl Wire for DeleteRangeRequest {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.bytes(&self.key);
        e.bytes(&self.range_end);
        e.bool(self.prev_kv);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(DeleteRangeRequest {
            key: d.bytes()?,
            range_end: d.bytes()?,
            prev_kv: d.bool()?,
        })
    }
}

impl Wire for DeleteRangeResponse {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        self.header.encode(e);
        e.i64(self.deleted);
        enc_vec(e, &self.prev_kvs);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(DeleteRangeResponse {
            header: ResponseHeader::decode(d)?,
            deleted: d.i64()?,
            prev_kvs: dec_vec(d)?,
        })
    }
}

impl Wire for Compare {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.u8(match self.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
        match &self.target {
            CompareTarget::Version(v) => {
                e.u8(0);
                e.i64(*v);
            }
            CompareTarget::CreateRevision(v) => {
                e.u8(1);
                e.i64(*v);
            }
            CompareTarget::ModRevision(v) => {
                e.u8(2);
                e.i64(*v);
            }
            CompareTarget::Value(v) => {
                e.u8(3);
                e.bytes(v);
            }
            CompareTarget::Lease(v) => {
                e.u8(4);
                e.i64(*v);
            }
        }
        e.bytes(&self.key);
        e.bytes(&self.range_end);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let result = match d.u8()? {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            3 => CompareResult::NotEqual,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "compare result",
                    tag,
                });
            }
        };
        let target = match d.u8()? {
            0 => CompareTarget::Version(d.i64()?),
            1 => CompareTarget::CreateRevision(d.i64()?),
            2 => CompareTarget::ModRevision(d.i64()?),
            3 => CompareTarget::Value(d.bytes()?),
            4 => CompareTarget::Lease(d.i64()?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "compare target",
                    tag,
                });
            }
        };
        Ok(Compare {
            result,
            target,
            key: d.bytes()?,
            range_end: d.bytes()?,
        })
    }
}

impl Wire for RequestOp {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        match self {
            RequestOp::Range(r) => {
                e.u8(1);
                r.encode(e);
            }
            RequestOp::Put(r) => {
                e.u8(2);
                r.encode(e);
            }
            RequestOp::DeleteRange(r) => {
                e.u8(3);
                r.encode(e);
            }
            RequestOp::Txn(r) => {
                e.u8(4);
                r.encode(e);
            }
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        match d.u8()? {
            1 => Ok(RequestOp::Range(RangeRequest::decode(d)?)),
            2 => Ok(RequestOp::Put(PutRequest::decode(d)?)),
            3 => Ok(RequestOp::DeleteRange(DeleteRangeRequest::decode(d)?)),
            4 => Ok(RequestOp::Txn(TxnRequest::decode(d)?)),
            tag => Err(DecodeError::UnknownTag {
                what: "request op",
                tag,
            }),
        }
    }
}

impl Wire for ResponseOp {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        match self {
            ResponseOp::Range(r) => {
                e.u8(1);
                r.encode(e);
            }
            ResponseOp::Put(r) => {
                e.u8(2);
                r.encode(e);
            }
            ResponseOp::DeleteRange(r) => {
                e.u8(3);
                r.encode(e);
            }
            ResponseOp::Txn(r) => {
                e.u8(4);
                r.encode(e);
            }
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        match d.u8()? {
            1 => Ok(ResponseOp::Range(RangeResponse::decode(d)?)),
            2 => Ok(ResponseOp::Put(PutResponse::decode(d)?)),
            3 => Ok(ResponseOp::DeleteRange(DeleteRangeResponse::decode(d)?)),
            4 => Ok(ResponseOp::Txn(TxnResponse::decode(d)?)),
            tag => Err(DecodeError::UnknownTag {
                what: "response op",
                tag,
            }),
        }
    }
}

impl Wire for TxnRequest {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        enc_vec(e, &self.compare);
        enc_vec(e, &self.success);
        enc_vec(e, &self.failure);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        d.enter()?;
        let txn = TxnRequest {
            compare: dec_vec(d)?,
            success: dec_vec(d)?,
            failure: dec_vec(d)?,
        };
        d.leave();
        Ok(txn)
    }
}

impl Wire for TxnResponse {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        self.header.encode(e);
        e.bool(self.succeeded);
        enc_vec(e, &self.responses);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        d.enter()?;
        let txn = TxnResponse {
            header: ResponseHeader::decode(d)?,
            succeeded: d.bool()?,
            responses: dec_vec(d)?,
        };
        d.leave();
        Ok(txn)
    }
}

impl Wire for Command {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        match self {
            Command::Put(r) => {
                e.u8(1);
                r.encode(e);
            }
            Command::DeleteRange(r) => {
                e.u8(2);
                r.encode(e);
            }
            Command::Txn(r) => {
                e.u8(3);
                r.encode(e);
            }
            Command::Compact(r) => {
                e.u8(4);
                e.i64(r.revision);
                e.bool(r.physical);
            }
            Command::LeaseGrant(r) => {
                e.u8(5);
                e.i64(r.ttl);
                e.i64(r.id);
            }
            Command::LeaseRevoke(r) => {
                e.u8(6);
                e.i64(r.id);
            }
            Command::LeaseKeepAlive(r) => {
                e.u8(7);
                e.i64(r.id);
            }
            Command::LeaseExpire(r) => {
                e.u8(8);
                enc_vec(e, &r.ids);
            }
            Command::LeaseRenewAll => e.u8(9),
            Command::SetMembers(r) => {
                e.u8(10);
                r.encode(e);
            }
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(match d.u8()? {
            1 => Command::Put(PutRequest::decode(d)?),
            2 => Command::DeleteRange(DeleteRangeRequest::decode(d)?),
            3 => Command::Txn(TxnRequest::decode(d)?),
            4 => Command::Compact(CompactionRequest {
                revision: d.i64()?,
                physical: d.bool()?,
            }),
            5 => Command::LeaseGrant(LeaseGrantRequest {
                ttl: d.i64()?,
                id: d.i64()?,
            }),
            6 => Command::LeaseRevoke(LeaseRevokeRequest { id: d.i64()? }),
            7 => Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: d.i64()? }),
            8 => Command::LeaseExpire(LeaseExpireRequest { ids: dec_vec(d)? }),
            9 => Command::LeaseRenewAll,
            10 => Command::SetMembers(SetMembersRequest::decode(d)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "command",
                    tag,
                });
            }
        })
    }
}

impl Wire for Response {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        match self {
            Response::Put(r) => {
                e.u8(1);
                r.encode(e);
            }
            Response::DeleteRange(r) => {
                e.u8(2);
                r.encode(e);
            }
            Response::Txn(r) => {
                e.u8(3);
                r.encode(e);
            }
            Response::Compact(r) => {
                e.u8(4);
                r.header.encode(e);
            }
            Response::LeaseGrant(r) => {
                e.u8(5);
                r.header.encode(e);
                e.i64(r.id);
                e.i64(r.ttl);
                e.bytes(r.error.as_bytes());
            }
            Response::LeaseRevoke(r) => {
                e.u8(6);
                r.header.encode(e);
            }
            Response::LeaseKeepAlive(r) => {
                e.u8(7);
                r.header.encode(e);
                e.i64(r.id);
                e.i64(r.ttl);
            }
            Response::LeaseExpire(r) => {
                e.u8(8);
                r.header.encode(e);
                enc_vec(e, &r.revoked);
            }
            Response::LeaseRenewAll(r) => {
                e.u8(9);
                r.header.encode(e);
                e.u64(r.renewed);
            }
            Response::SetMembers(r) => {
                e.u8(10);
                r.header.encode(e);
                enc_vec(e, &r.members);
            }
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(match d.u8()? {
            1 => Response::Put(PutResponse::decode(d)?),
            2 => Response::DeleteRange(DeleteRangeResponse::decode(d)?),
            3 => Response::Txn(TxnResponse::decode(d)?),
            4 => Response::Compact(CompactionResponse {
                header: ResponseHeader::decode(d)?,
            }),
            5 => Response::LeaseGrant(LeaseGrantResponse {
                header: ResponseHeader::decode(d)?,
                id: d.i64()?,
                ttl: d.i64()?,
                error: String::from_utf8(d.bytes()?)
                    .map_err(|_| DecodeError::OutOfRange("lease grant error text"))?,
            }),
            6 => Response::LeaseRevoke(LeaseRevokeResponse {
                header: ResponseHeader::decode(d)?,
            }),
            7 => Response::LeaseKeepAlive(LeaseKeepAliveResponse {
                header: ResponseHeader::decode(d)?,
                id: d.i64()?,
                ttl: d.i64()?,
            }),
            8 => Response::LeaseExpire(LeaseExpireResponse {
                header: ResponseHeader::decode(d)?,
                revoked: dec_vec(d)?,
            }),
            9 => Response::LeaseRenewAll(LeaseRenewAllResponse {
                header: ResponseHeader::decode(d)?,
                renewed: d.u64()?,
            }),
            10 => Response::SetMembers(SetMembersResponse {
                header: ResponseHeader::decode(d)?,
                members: dec_vec(d)?,
            }),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "response",
                    tag,
                });
            }
        })
    }
}

fn usize_to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn u64_to_usize(n: u64) -> Result<usize, DecodeError> {
    usize::try_from(n).map_err(|_| DecodeError::OutOfRange("usize"))
}

impl Wire for KvError {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        match self {
            KvError::EmptyKey => e.u8(1),
            KvError::KeyNotFound => e.u8(2),
            KvError::ValueProvided => e.u8(3),
            KvError::LeaseProvided => e.u8(4),
            KvError::TooManyOps { max_txn_ops } => {
                e.u8(5);
                e.u64(usize_to_u64(*max_txn_ops));
            }
            KvError::DuplicateKey => e.u8(6),
            KvError::Compacted { compact_revision } => {
                e.u8(7);
                e.i64(*compact_revision);
            }
            KvError::FutureRevision { current_revision } => {
                e.u8(8);
                e.i64(*current_revision);
            }
            KvError::LeaseNotFound { id } => {
                e.u8(9);
                e.i64(*id);
            }
            KvError::LeaseExists { id } => {
                e.u8(10);
                e.i64(*id);
            }
            KvError::LeaseTtlTooLarge { ttl } => {
                e.u8(11);
                e.i64(*ttl);
            }
            KvError::RequestTooLarge {
                size,
                max_request_bytes,
            } => {
                e.u8(12);
                e.u64(usize_to_u64(*size));
                e.u64(usize_to_u64(*max_request_bytes));
            }
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(match d.u8()? {
            1 => KvError::EmptyKey,
            2 => KvError::KeyNotFound,
            3 => KvError::ValueProvided,
            4 => KvError::LeaseProvided,
            5 => KvError::TooManyOps {
                max_txn_ops: u64_to_usize(d.u64()?)?,
            },
            6 => KvError::DuplicateKey,
            7 => KvError::Compacted {
                compact_revision: d.i64()?,
            },
            8 => KvError::FutureRevision {
                current_revision: d.i64()?,
            },
            9 => KvError::LeaseNotFound { id: d.i64()? },
            10 => KvError::LeaseExists { id: d.i64()? },
            11 => KvError::LeaseTtlTooLarge { ttl: d.i64()? },
            12 => KvError::RequestTooLarge {
                size: u64_to_usize(d.u64()?)?,
                max_request_bytes: u64_to_usize(d.u64()?)?,
            },
            tag => return Err(DecodeError::UnknownTag { what: "error", tag }),
        })
    }
}

/// A result as remembered by the session table.
impl Wire for Result<Response, KvError> {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        match self {
            Ok(r) => {
                e.u8(0);
                Wire::encode(r, e);
            }
            Err(err) => {
                e.u8(1);
                err.encode(e);
            }
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        match d.u8()? {
            0 => Ok(Ok(<Response as Wire>::decode(d)?)),
            1 => Ok(Err(KvError::decode(d)?)),
            tag => Err(DecodeError::UnknownTag {
                what: "result",
                tag,
            }),
        }
    }
}

fn encode_framed<T: Wire>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Enc::new(&mut out);
    e.u8(COMMAND_FORMAT);
    value.encode(&mut e);
    out
}

fn decode_framed<T: Wire>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut d = Dec::new(bytes);
    let format = d.u8()?;
    if format != COMMAND_FORMAT {
        return Err(DecodeError::UnsupportedFormat(format));
    }
    let value = T::decode(&mut d)?;
    d.finish()?;
    Ok(value)
}

impl Command {
    /// The bytes to put in a log entry.
    pub fn encode(&self) -> Vec<u8> {
        encode_framed(self)
    }

    /// The length of [`Command::encode`], without building it: what the
    /// request size limit is checked against.
    pub fn encoded_len(&self) -> usize {
        let mut counter = Counter::default();
        let mut e = Enc::new(&mut counter);
        e.u8(COMMAND_FORMAT);
        Wire::encode(self, &mut e);
        counter.0
    }

    /// Reads a log entry's bytes back; any malformed input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        decode_framed(bytes)
    }
}

impl Response {
    /// The bytes of a response (for caches and for shipping answers).
    pub fn encode(&self) -> Vec<u8> {
        encode_framed(self)
    }

    /// Reads a response back; any malformed input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        decode_framed(bytes)
    }
}
