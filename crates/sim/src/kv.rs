//! The small key-value state machine the simulator replicates: registers
//! with put and compare-and-set, and the exactly-once session table.

use std::collections::BTreeMap;

use paxos::multi::{ClientId, Command};

/// A key: the simulator uses a handful, named `k0`, `k1`, ...
pub type Key = u8;

/// An operation carried in a command's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Key,
        /// The value (unique per write in the workload).
        value: u64,
    },
    /// Set `key` to `new` if it holds `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Key,
        /// The value required.
        expected: Option<u64>,
        /// The value written on a match.
        new: u64,
    },
}

impl KvOp {
    /// Encodes the operation into a command payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(19);
        match *self {
            KvOp::Put { key, value } => {
                out.extend_from_slice(&[1, key]);
                out.extend_from_slice(&value.to_le_bytes());
            }
            KvOp::Cas { key, expected, new } => {
                out.extend_from_slice(&[2, key]);
                out.extend_from_slice(&new.to_le_bytes());
                out.push(u8::from(expected.is_some()));
                out.extend_from_slice(&expected.unwrap_or(0).to_le_bytes());
            }
        }
        out
    }

    /// Decodes a payload; `None` for anything malformed.
    pub fn decode(bytes: &[u8]) -> Option<KvOp> {
        let u64_at = |at: usize| -> Option<u64> {
            let raw: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
            Some(u64::from_le_bytes(raw))
        };
        match (bytes.first()?, bytes.get(1)?) {
            (1, &key) if bytes.len() == 10 => Some(KvOp::Put {
                key,
                value: u64_at(2)?,
            }),
            (2, &key) if bytes.len() == 19 => {
                let new = u64_at(2)?;
                let expected = match bytes.get(10)? {
                    0 => None,
                    1 => Some(u64_at(11)?),
                    _ => return None,
                };
                Some(KvOp::Cas { key, expected, new })
            }
            _ => None,
        }
    }
}

/// The result of applying a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvReply {
    /// The put took effect.
    Written,
    /// The compare matched and the new value was written.
    CasOk,
    /// The compare did not match; nothing changed.
    CasFailed,
    /// An older sequence number than the client's latest: not applied, and
    /// its answer is no longer cached.
    Stale,
    /// The payload could not be decoded; not applied.
    Malformed,
}

/// The replicated state: data plus, per client, the last sequence number
/// applied and its reply (replicated too, so every replica dedups alike).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    data: BTreeMap<Key, u64>,
    sessions: BTreeMap<ClientId, (u64, KvReply)>,
}

impl Kv {
    /// Applies a command once; a retry of the latest command of its client
    /// is answered from the cache without applying it again.
    pub fn apply(&mut self, command: &Command) -> KvReply {
        if let Some((seq, reply)) = self.sessions.get(&command.client) {
            if command.seq == *seq {
                return *reply;
            }
            if command.seq < *seq {
                return KvReply::Stale;
            }
        }
        let reply = match KvOp::decode(&command.payload) {
            Some(KvOp::Put { key, value }) => {
                self.data.insert(key, value);
                KvReply::Written
            }
            Some(KvOp::Cas { key, expected, new }) => {
                if self.data.get(&key).copied() == expected {
                    self.data.insert(key, new);
                    KvReply::CasOk
                } else {
                    KvReply::CasFailed
                }
            }
            None => KvReply::Malformed,
        };
        self.sessions.insert(command.client, (command.seq, reply));
        reply
    }

    /// Reads a key.
    pub fn get(&self, key: Key) -> Option<u64> {
        self.data.get(&key).copied()
    }

    /// The whole state as bytes, for a snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.data.len() * 9 + self.sessions.len() * 17);
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        for (k, v) in &self.data {
            out.push(*k);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for (c, (seq, reply)) in &self.sessions {
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.push(*reply as u8);
        }
        out
    }

    /// Restores a state from [`Kv::encode`]'s bytes; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Kv> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let b = bytes.get(at..at + n)?;
            at += n;
            Some(b)
        };
        let u32_of = |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.try_into().ok()?)) };
        let u64_of = |b: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(b.try_into().ok()?)) };
        let mut kv = Kv::default();
        let n = u32_of(take(4)?)?;
        for _ in 0..n {
            let k = take(1)?[0];
            let v = u64_of(take(8)?)?;
            kv.data.insert(k, v);
        }
        let n = u32_of(take(4)?)?;
        for _ in 0..n {
            let c = u64_of(take(8)?)?;
            let seq = u64_of(take(8)?)?;
            let reply = match take(1)?[0] {
                0 => KvReply::Written,
                1 => KvReply::CasOk,
                2 => KvReply::CasFailed,
                3 => KvReply::Stale,
                4 => KvReply::Malformed,
                _ => return None,
            };
            kv.sessions.insert(c, (seq, reply));
        }
        if at != bytes.len() {
            return None;
        }
        Some(kv)
    }

    /// A digest of the whole state, for comparing replicas.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::default();
        for (k, v) in &self.data {
            h.write(&[*k]);
            h.write(&v.to_le_bytes());
        }
        for (c, (s, r)) in &self.sessions {
            h.write(&c.to_le_bytes());
            h.write(&s.to_le_bytes());
            h.write(&[*r as u8]);
        }
        h.0
    }
}

/// FNV-1a, for digests that must not depend on the process (unlike std's
/// randomly keyed hasher).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mixes bytes in.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client: u64, seq: u64, op: KvOp) -> Command {
        Command {
            client,
            seq,
            payload: op.encode(),
        }
    }

    #[test]
    fn ops_round_trip_and_garbage_is_refused() {
        for op in [
            KvOp::Put { key: 3, value: 7 },
            KvOp::Cas {
                key: 1,
                expected: None,
                new: 9,
            },
            KvOp::Cas {
                key: 1,
                expected: Some(4),
                new: 9,
            },
        ] {
            assert_eq!(KvOp::decode(&op.encode()), Some(op));
        }
        assert_eq!(KvOp::decode(&[]), None);
        assert_eq!(KvOp::decode(&[1, 2, 3]), None);
        assert_eq!(KvOp::decode(&[9; 19]), None);
    }

    #[test]
    fn snapshots_round_trip() {
        let mut kv = Kv::default();
        kv.apply(&cmd(3, 1, KvOp::Put { key: 2, value: 99 }));
        kv.apply(&cmd(
            4,
            7,
            KvOp::Cas {
                key: 2,
                expected: None,
                new: 1,
            },
        ));
        let bytes = kv.encode();
        assert_eq!(Kv::decode(&bytes), Some(kv));
        assert_eq!(Kv::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn retries_apply_once() {
        let mut kv = Kv::default();
        let put = cmd(1, 1, KvOp::Put { key: 0, value: 10 });
        assert_eq!(kv.apply(&put), KvReply::Written);
        let cas = cmd(
            1,
            2,
            KvOp::Cas {
                key: 0,
                expected: Some(10),
                new: 11,
            },
        );
        assert_eq!(kv.apply(&cas), KvReply::CasOk);
        // The retry is answered from the cache: it would fail if applied again.
        assert_eq!(kv.apply(&cas), KvReply::CasOk);
        assert_eq!(kv.get(0), Some(11));
        assert_eq!(kv.apply(&put), KvReply::Stale);
        assert_eq!(kv.get(0), Some(11));
    }
}
