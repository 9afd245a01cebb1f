//! Snapshot, restore, and the state hash.
//!
//! A snapshot is the whole replicated state in one canonical byte string:
//! everything is written in key or id order, so two replicas that applied
//! the same commands produce the same bytes. The state hash is the FNV-1a
//! hash of those bytes (computed without building them). Indexes that can
//! be derived (the change log, lease key sets, deadline and activity
//! orders) are rebuilt on restore rather than stored.
//!
//! Layout (format 3): magic `SYNODKV\0`, format byte; revision, compact
//! revision, clock, next lease id; leases (id, ttl, deadline); keys (key,
//! versions: mod revision, sub, create revision, version, lease, value);
//! members (id, name, peer URLs, client URLs, learner); sessions (client,
//! lowest sequence number known, last activity, answers: seq, result);
//! format 2, still read, had no members section; format 1,
//! still read, kept one answer per session (client, seq, last activity,
//! result); 8-byte checksum: the
//! tag [`CRC_TAG`] and the CRC-32C of the body (hardware-fast: the FNV-1a
//! state hash, which earlier snapshots carry there and which restore still
//! accepts, took more time than encoding).

use std::collections::{BTreeMap, VecDeque};

/// The high half of a CRC-32C snapshot trailer ("CRC3").
pub const CRC_TAG: u64 = 0x4352_4333;
use std::sync::Arc;

use crate::cluster::ClusterMember;
use crate::codec::{Dec, DecodeError, Enc, Fnv64, Sink, Wire, dec_vec, enc_vec};
use crate::history::History;
use crate::lease::Lessor;
use crate::limits::Limits;
use crate::session::{Remembered, Session, SessionTable, window_low};
use crate::store::{Change, Key, NONE, Record, Store};
use crate::types::NO_LEASE;
use crate::values::{ValueRef, Values};

const MAGIC: &[u8; 8] = b"SYNODKV\0";

/// Bytes per piece that [`Store::write_snapshot`] hands out.
pub const SNAPSHOT_PIECE_BYTES: usize = 1 << 20;

/// A sink that hands the encoding out in pieces, keeping the checksum of
/// the body and the first error.
struct Pieces<F, E> {
    buf: Vec<u8>,
    crc: u32,
    out: F,
    failed: Option<E>,
}

impl<F: FnMut(&[u8]) -> Result<(), E>, E> Pieces<F, E> {
    fn flush(&mut self) {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        if self.failed.is_none() {
            self.failed = (self.out)(&self.buf).err();
        }
        self.buf.clear();
    }
}

impl<F: FnMut(&[u8]) -> Result<(), E>, E> Sink for Pieces<F, E> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= SNAPSHOT_PIECE_BYTES {
            self.flush();
        }
    }
}
/// The snapshot format this version writes and reads.
pub const SNAPSHOT_FORMAT: u8 = 3;

/// The format before the member table was kept; still read.
const SNAPSHOT_FORMAT_NO_MEMBERS: u8 = 2;

/// The format before sessions kept a window of answers; still read.
const SNAPSHOT_FORMAT_ONE_ANSWER: u8 = 1;

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot of this store.
    #[error("not a kv snapshot")]
    BadMagic,
    /// A snapshot format this version does not read.
    #[error("unsupported snapshot format {0}")]
    UnsupportedFormat(u8),
    /// The checksum does not match: the bytes were damaged.
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// The bytes do not decode.
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The bytes decode but break an invariant of the state.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(&'static str),
}

impl Store {
    fn write_state<S: Sink>(&self, sink: &mut S) {
        let mut e = Enc::new(sink);
        e.raw(MAGIC);
        e.u8(SNAPSHOT_FORMAT);
        e.i64(self.revision);
        e.i64(self.compact_revision);
        e.u64(self.clock_ms);
        e.i64(self.lessor.next_id);
        e.len(self.lessor.leases.len());
        for (&id, lease) in &self.lessor.leases {
            e.i64(id);
            e.i64(lease.ttl_s);
            e.u64(lease.expiry_ms);
        }
        e.len(self.index.len());
        let mut versions: Vec<&Record> = Vec::new();
        for (key, latest) in &self.index {
            e.bytes(key);
            versions.clear();
            versions.extend(self.chain(latest));
            e.len(versions.len());
            for r in versions.iter().rev() {
                e.i64(r.mod_revision);
                e.u64(u64::from(r.sub));
                e.i64(r.create_revision);
                e.i64(r.version);
                e.i64(r.lease);
                e.bytes(self.value(r));
            }
        }
        enc_vec(&mut e, &self.members);
        self.write_sessions(&mut e);
    }

    /// The exactly-once table, the last section of the state.
    fn write_sessions<S: Sink>(&self, e: &mut Enc<'_, S>) {
        e.len(self.sessions.clients.len());
        for (&client, s) in self.sessions.clients.iter() {
            e.u64(client);
            e.u64(s.low);
            e.u64(s.last_ms);
            e.len(s.answers.len());
            for (&seq, answer) in &s.answers {
                e.u64(seq);
                match answer {
                    Remembered::Shared(result) => result.encode(e),
                    put @ Remembered::Put(_) => put.result().encode(e),
                }
            }
        }
    }

    /// The whole state as bytes, identical on every replica that applied
    /// the same commands. Limits are configuration, not state: they are not
    /// included.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let written = self.write_snapshot(|piece| {
            out.extend_from_slice(piece);
            Ok::<(), std::convert::Infallible>(())
        });
        match written {
            Ok(()) => out,
            Err(never) => match never {},
        }
    }

    /// The bytes of [`Store::snapshot`], handed to `out` in pieces of about
    /// [`SNAPSHOT_PIECE_BYTES`], so that saving a large store never holds
    /// its whole image in memory. Stops at the first error of `out`.
    pub fn write_snapshot<E>(&self, out: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut pieces = Pieces {
            buf: Vec::with_capacity(SNAPSHOT_PIECE_BYTES),
            crc: 0,
            out,
            failed: None,
        };
        self.write_state(&mut pieces);
        pieces.flush();
        let trailer = CRC_TAG << 32 | u64::from(pieces.crc);
        if pieces.failed.is_none() {
            pieces.failed = (pieces.out)(&trailer.to_le_bytes()).err();
        }
        pieces.failed.map_or(Ok(()), Err)
    }

    /// A copy of the store as it is now, to encode with [`Store::snapshot`]
    /// on another thread while this one goes on applying. Value bytes,
    /// history and the exactly-once table's shards are shared, not copied
    /// (the arena stops writing to its segments; a shared history chunk or
    /// shard is copied when the store next changes it); the index and the
    /// lease table are copied. The change feed that serves watchers and the table's
    /// activity order are not in a snapshot and are left out: the copy is
    /// for encoding, not for serving or applying.
    pub fn frozen(&mut self) -> Store {
        self.values.seal();
        Store {
            limits: self.limits.clone(),
            index: self.index.clone(),
            history: self.history.clone(),
            history_dead: self.history_dead,
            values: self.values.clone(),
            changes: VecDeque::new(),
            revision: self.revision,
            compact_revision: self.compact_revision,
            clock_ms: self.clock_ms,
            lessor: self.lessor.clone(),
            sessions: self.sessions.frozen(),
            members: self.members.clone(),
        }
    }

    /// A digest of the whole replicated state: equal on replicas that
    /// applied the same commands (the simulator compares it).
    pub fn state_hash(&self) -> u64 {
        let mut hash = Fnv64::default();
        self.write_state(&mut hash);
        hash.0
    }

    /// Rebuilds a store from [`Store::snapshot`] bytes, checking the
    /// checksum and every invariant; never panics on bad bytes.
    pub fn restore(bytes: &[u8], limits: Limits) -> Result<Store, SnapshotError> {
        let body_len = bytes
            .len()
            .checked_sub(8)
            .ok_or(SnapshotError::Decode(DecodeError::Truncated))?;
        let (body, sum) = bytes.split_at(body_len);
        let sum = sum
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| SnapshotError::Decode(DecodeError::Truncated))?;
        let crc_matches =
            sum >> 32 == CRC_TAG && sum & 0xffff_ffff == u64::from(crc32c::crc32c(body));
        if !crc_matches {
            // Snapshots written before the CRC carry the FNV-1a state hash.
            let mut hash = Fnv64::default();
            hash.put(body);
            if sum != hash.0 {
                return Err(SnapshotError::Checksum);
            }
        }
        let mut d = Dec::new(body);
        if d.raw(MAGIC.len())? != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let format = d.u8()?;
        if ![
            SNAPSHOT_FORMAT,
            SNAPSHOT_FORMAT_NO_MEMBERS,
            SNAPSHOT_FORMAT_ONE_ANSWER,
        ]
        .contains(&format)
        {
            return Err(SnapshotError::UnsupportedFormat(format));
        }
        let bad = SnapshotError::Inconsistent;
        let revision = d.i64()?;
        let compact_revision = d.i64()?;
        if revision < 1
            || revision == i64::MAX
            || compact_revision < 0
            || compact_revision > revision
        {
            return Err(bad("revisions"));
        }
        let clock_ms = d.u64()?;
        let mut lessor = Lessor::default();
        lessor.next_id = d.i64()?;
        let lease_count = d.count(3)?;
        let mut last_id = None;
        for _ in 0..lease_count {
            let id = d.i64()?;
            let ttl_s = d.i64()?;
            let expiry_ms = d.u64()?;
            if id == NO_LEASE || last_id.is_some_and(|last| last >= id) {
                return Err(bad("lease ids"));
            }
            last_id = Some(id);
            lessor.insert(id, ttl_s, expiry_ms);
        }

        let mut index: BTreeMap<Key, Record> = BTreeMap::new();
        let mut history = History::default();
        let mut values = Values::default();
        let mut changes: Vec<Change> = Vec::new();
        let key_count = d.count(2)?;
        for _ in 0..key_count {
            let key: Key = Arc::from(d.slice()?);
            if key.is_empty() || index.last_key_value().is_some_and(|(last, _)| *last >= key) {
                return Err(bad("keys"));
            }
            let n = d.count(6)?;
            let mut latest: Option<Record> = None;
            for _ in 0..n {
                let mut r = Record {
                    mod_revision: d.i64()?,
                    sub: d.u32()?,
                    create_revision: d.i64()?,
                    version: d.i64()?,
                    lease: d.i64()?,
                    value: ValueRef::default(),
                    prev: NONE,
                };
                let value = d.slice()?;
                check_record(&r, value, revision)?;
                r.value = values.store(value);
                if let Some(older) = latest {
                    if (older.mod_revision, older.sub) >= (r.mod_revision, r.sub) {
                        return Err(bad("history order"));
                    }
                    r.prev = history.len() as u64;
                    history.push(older);
                }
                if r.mod_revision >= compact_revision {
                    changes.push(Change {
                        main: r.mod_revision,
                        sub: r.sub,
                        key: Arc::clone(&key),
                    });
                }
                latest = Some(r);
            }
            let latest = latest.ok_or(bad("empty history"))?;
            if !latest.is_tombstone() && latest.lease != NO_LEASE {
                if !lessor.contains(latest.lease) {
                    return Err(bad("key attached to a missing lease"));
                }
                lessor.attach(latest.lease, Arc::clone(&key));
            }
            index.insert(key, latest);
        }
        changes.sort_by_key(|c| (c.main, c.sub));

        let members: Vec<ClusterMember> = if format == SNAPSHOT_FORMAT {
            dec_vec(&mut d)?
        } else {
            Vec::new()
        };
        if members.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err(bad("member ids"));
        }
        let mut sessions = SessionTable::default();
        let session_count = d.count(4)?;
        for _ in 0..session_count {
            let client = d.u64()?;
            if sessions.clients.last().is_some_and(|last| last >= client) {
                return Err(bad("session ids"));
            }
            type Answer = Result<crate::command::Response, crate::error::KvError>;
            let session = if format == SNAPSHOT_FORMAT_ONE_ANSWER {
                let seq = d.u64()?;
                let last_ms = d.u64()?;
                let answer = Remembered::new(Answer::decode(&mut d)?);
                // Anything older was stale then too.
                Session {
                    low: seq,
                    last_ms,
                    answers: BTreeMap::from([(seq, answer)]),
                }
            } else {
                let low = d.u64()?;
                let last_ms = d.u64()?;
                let mut answers = BTreeMap::new();
                for _ in 0..d.count(2)? {
                    let seq = d.u64()?;
                    if seq < low
                        || answers
                            .last_key_value()
                            .is_some_and(|(&last, _)| last >= seq)
                    {
                        return Err(bad("session answers"));
                    }
                    answers.insert(seq, Remembered::new(Answer::decode(&mut d)?));
                }
                let Some((&latest, _)) = answers.last_key_value() else {
                    return Err(bad("session without answers"));
                };
                if low < window_low(latest) {
                    return Err(bad("session answers"));
                }
                Session {
                    low,
                    last_ms,
                    answers,
                }
            };
            sessions.record(client, session);
        }
        d.finish()?;
        Ok(Store {
            limits,
            index,
            history,
            history_dead: 0,
            values,
            changes: VecDeque::from(changes),
            revision,
            compact_revision,
            clock_ms,
            lessor,
            sessions,
            members,
        })
    }
}

fn check_record(r: &Record, value: &[u8], revision: i64) -> Result<(), SnapshotError> {
    let bad = SnapshotError::Inconsistent;
    if r.mod_revision < 1 || r.mod_revision > revision {
        return Err(bad("mod revision"));
    }
    if r.is_tombstone() {
        if r.create_revision != 0 || r.lease != NO_LEASE || !value.is_empty() {
            return Err(bad("tombstone"));
        }
    } else if r.version < 1 || r.create_revision < 1 || r.create_revision > r.mod_revision {
        return Err(bad("version or create revision"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ApplyContext, Command};
    use crate::session::SessionOutcome;
    use crate::types::PutRequest;

    /// The sessions section as format 1 wrote it: one answer per client.
    fn sessions_format_one(store: &Store) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Enc::new(&mut out);
        e.len(store.sessions.clients.len());
        for (&client, s) in store.sessions.clients.iter() {
            let (&seq, answer) = s.answers.last_key_value().expect("an answer");
            e.u64(client);
            e.u64(seq);
            e.u64(s.last_ms);
            answer.result().encode(&mut e);
        }
        out
    }

    /// The sessions section as this build writes it.
    fn sessions_now(store: &Store) -> Vec<u8> {
        let mut out = Vec::new();
        store.write_sessions(&mut Enc::new(&mut out));
        out
    }

    /// A data directory written before the window keeps working: a format-1
    /// image restores, its retries are answered from the table, and the
    /// commands before a client's last are stale, as they were.
    #[test]
    fn a_format_one_snapshot_restores_with_the_same_answers() {
        let mut store = Store::default();
        let put = |v: &str| {
            Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: v.as_bytes().to_vec(),
                ..PutRequest::default()
            })
        };
        let ctx = ApplyContext { now_ms: 5 };
        for (client, seq) in [(1, 1), (2, 7), (3, 1)] {
            let outcome = store.apply_session(client, seq, &put("x"), ctx);
            assert!(matches!(outcome, SessionOutcome::Applied(Ok(_))));
        }
        let image = store.snapshot();
        let body = &image[..image.len() - 8];
        let now = [members_now(&store), sessions_now(&store)].concat();
        assert!(
            body.ends_with(&now),
            "the members and sessions end the image"
        );
        let mut old = body[..body.len() - now.len()].to_vec();
        old[MAGIC.len()] = SNAPSHOT_FORMAT_ONE_ANSWER;
        old.extend_from_slice(&sessions_format_one(&store));
        let trailer = CRC_TAG << 32 | u64::from(crc32c::crc32c(&old));
        old.extend_from_slice(&trailer.to_le_bytes());

        let mut restored = Store::restore(&old, Limits::default()).expect("format 1 restores");
        assert_eq!(restored.revision(), store.revision());
        assert_eq!(restored.session_count(), 3);
        for (client, seq) in [(1, 1), (2, 7), (3, 1)] {
            assert!(matches!(
                restored.apply_session(client, seq, &put("retry"), ctx),
                SessionOutcome::Duplicate(Ok(_))
            ));
        }
        assert_eq!(
            restored.apply_session(2, 6, &put("older"), ctx),
            SessionOutcome::Stale { latest_seq: 7 }
        );
        assert_eq!(
            restored.revision(),
            store.revision(),
            "nothing applied twice"
        );
        // Written again, it is the format of now.
        assert_eq!(restored.snapshot()[MAGIC.len()], SNAPSHOT_FORMAT);
    }

    fn members_now(store: &Store) -> Vec<u8> {
        let mut out = Vec::new();
        enc_vec(&mut Enc::new(&mut out), &store.members);
        out
    }

    /// The member table survives a snapshot; a format-2 image (before the
    /// table was kept) restores with none, for the runtime to seed.
    #[test]
    fn the_member_table_is_kept_and_a_format_two_image_has_none() {
        let mut store = Store::default();
        let member = |id, learner| crate::ClusterMember {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            client_urls: vec![],
            is_learner: learner,
        };
        store.seed_members(vec![member(9, false), member(3, true)]);
        let image = store.snapshot();
        let restored = Store::restore(&image, Limits::default()).expect("restores");
        assert_eq!(restored.members(), &[member(3, true), member(9, false)]);
        assert_eq!(restored.state_hash(), store.state_hash());

        let body = &image[..image.len() - 8];
        let tail = [members_now(&store), sessions_now(&store)].concat();
        let mut old = body[..body.len() - tail.len()].to_vec();
        old[MAGIC.len()] = SNAPSHOT_FORMAT_NO_MEMBERS;
        old.extend_from_slice(&sessions_now(&store));
        let trailer = CRC_TAG << 32 | u64::from(crc32c::crc32c(&old));
        old.extend_from_slice(&trailer.to_le_bytes());
        let restored = Store::restore(&old, Limits::default()).expect("format 2 restores");
        assert!(restored.members().is_empty());
        assert_eq!(restored.revision(), store.revision());
    }
}
