//! The binary encoding of messages and records, for the wire and the disk.
//!
//! Every encoding starts with a version byte, then a tag, then the fields as
//! LEB128 varints and length-prefixed bytes. Decoding never panics and never
//! reserves much more than the input could hold: a length is checked against
//! the bytes that remain before anything is reserved, and a list reserves
//! room for at most [`RESERVE_ITEMS_MAX`] items up front (an item in memory
//! is larger than its least encoding, so a count alone could ask for many
//! times the frame); longer lists grow as their items arrive.

use std::collections::BTreeSet;
use std::fmt;

use super::durable::Record;
use super::membership::Membership;
use super::message::{AcceptedEntry, Command, Envelope, Message, Reconfiguration, Value};
use crate::ballot::Ballot;

/// Most items a decoded list reserves room for before reading them.
pub const RESERVE_ITEMS_MAX: usize = 1024;

/// The encoding version written today. A reader refuses any other.
pub const VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    Truncated,
    /// The version byte is not one this build reads.
    Version(u8),
    /// A tag names no known message, record or value.
    Tag(u8),
    /// A varint is longer than a u64.
    Overflow,
    /// Bytes were left over after a complete value.
    Trailing(usize),
    /// A text field is not UTF-8.
    Text,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "input ends in the middle of a field"),
            DecodeError::Version(v) => write!(f, "unsupported encoding version {v}"),
            DecodeError::Tag(t) => write!(f, "unknown tag {t}"),
            DecodeError::Overflow => write!(f, "varint overflows 64 bits"),
            DecodeError::Trailing(n) => write!(f, "{n} unexpected trailing bytes"),
            DecodeError::Text => write!(f, "text field is not UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends encodings to a buffer. Public so that the member layer encodes
/// its own peer messages with the same primitives, in the same frames.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    /// One byte: a version or a tag.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    /// An unsigned LEB128 varint.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn ballot(&mut self, b: Ballot) {
        self.varint(b.round);
        self.varint(b.node);
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Noop => self.u8(0),
            Value::Batch(commands) => {
                self.u8(1);
                self.varint(commands.len() as u64);
                for c in commands.iter() {
                    self.varint(c.client);
                    self.varint(c.seq);
                    self.bytes(&c.payload);
                }
            }
            Value::Reconfigure(change) => {
                self.u8(2);
                for set in [&change.membership.voters, &change.membership.learners] {
                    self.varint(set.len() as u64);
                    for id in set {
                        self.varint(*id);
                    }
                }
                let c = &change.command;
                self.varint(c.client);
                self.varint(c.seq);
                self.bytes(&c.payload);
            }
        }
    }
}

/// Reads encodings from a slice; the counterpart of [`Writer`].
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `input` from its first byte.
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input }
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (first, rest) = self.input.split_first().ok_or(DecodeError::Truncated)?;
        self.input = rest;
        Ok(*first)
    }

    /// The next byte, left unread: tells which kind of message follows.
    pub fn peek(&self) -> Result<u8, DecodeError> {
        self.input.first().copied().ok_or(DecodeError::Truncated)
    }

    /// An unsigned LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Overflow);
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Overflow)
    }

    /// A count of items each at least one byte long: never more than remain.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.input.len() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    /// Length-prefixed bytes, never longer than what remains.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count()?;
        let (b, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(b)
    }

    fn ballot(&mut self) -> Result<Ballot, DecodeError> {
        Ok(Ballot::new(self.varint()?, self.varint()?))
    }

    fn value(&mut self) -> Result<Value, DecodeError> {
        match self.u8()? {
            0 => Ok(Value::Noop),
            1 => {
                let n = self.count()?;
                let mut commands = Vec::with_capacity(n.min(RESERVE_ITEMS_MAX));
                for _ in 0..n {
                    commands.push(Command {
                        client: self.varint()?,
                        seq: self.varint()?,
                        payload: self.bytes()?.to_vec(),
                    });
                }
                Ok(Value::Batch(commands.into()))
            }
            2 => {
                let mut sets = [BTreeSet::new(), BTreeSet::new()];
                for set in &mut sets {
                    for _ in 0..self.count()? {
                        set.insert(self.varint()?);
                    }
                }
                let [voters, learners] = sets;
                let command = Command {
                    client: self.varint()?,
                    seq: self.varint()?,
                    payload: self.bytes()?.to_vec(),
                };
                Ok(Value::Reconfigure(std::sync::Arc::new(Reconfiguration {
                    membership: Membership { voters, learners },
                    command,
                })))
            }
            t => Err(DecodeError::Tag(t)),
        }
    }

    /// The version byte; any other than [`VERSION`] is refused.
    pub fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8()? {
            VERSION => Ok(()),
            v => Err(DecodeError::Version(v)),
        }
    }

    /// Succeeds only if every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.input.len()))
        }
    }
}

/// Message tags from this one up are not Paxos messages: the member layer
/// sends its own messages (`member::wire`) in the same frames, after the
/// same head (version, from, to).
pub const MEMBER_TAG_MIN: u8 = 32;

/// Appends the encoding of `envelope` to `out`: the version, the sender and
/// the recipient, then the message's tag and fields.
pub fn encode_envelope(envelope: &Envelope, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    encode_head(&mut w, envelope.from, envelope.to);
    encode_message(&envelope.message, &mut w);
}

/// The head every frame between members starts with: version, from, to.
pub fn encode_head(w: &mut Writer<'_>, from: u64, to: u64) {
    w.u8(VERSION);
    w.varint(from);
    w.varint(to);
}

/// Reads a frame's head: checks the version, returns `(from, to)`.
pub fn decode_head(r: &mut Reader<'_>) -> Result<(u64, u64), DecodeError> {
    r.version()?;
    Ok((r.varint()?, r.varint()?))
}

/// Appends a Paxos message: its tag, then its fields.
pub fn encode_message(message: &Message, w: &mut Writer<'_>) {
    match message {
        Message::Prepare { ballot, first_slot } => {
            w.u8(1);
            w.ballot(*ballot);
            w.varint(*first_slot);
        }
        Message::Promise {
            ballot,
            accepted,
            snapshot_slot,
        } => {
            w.u8(2);
            w.ballot(*ballot);
            w.varint(*snapshot_slot);
            w.varint(accepted.len() as u64);
            for e in accepted {
                w.varint(e.slot);
                w.ballot(e.ballot);
                w.value(&e.value);
            }
        }
        Message::Accept {
            ballot,
            slot,
            value,
        } => {
            w.u8(3);
            w.ballot(*ballot);
            w.varint(*slot);
            w.value(value);
        }
        Message::Accepted { ballot, slot } => {
            w.u8(4);
            w.ballot(*ballot);
            w.varint(*slot);
        }
        Message::Nack { ballot, higher } => {
            w.u8(5);
            w.ballot(*ballot);
            w.ballot(*higher);
        }
        Message::Commit { slot, value } => {
            w.u8(6);
            w.varint(*slot);
            w.value(value);
        }
        Message::Chosen { ballot, slot } => {
            w.u8(10);
            w.ballot(*ballot);
            w.varint(*slot);
        }
        Message::Heartbeat {
            ballot,
            commit_index,
            round,
        } => {
            w.u8(7);
            w.ballot(*ballot);
            w.varint(*commit_index);
            w.varint(*round);
        }
        Message::HeartbeatAck {
            ballot,
            round,
            commit_index,
        } => {
            w.u8(8);
            w.ballot(*ballot);
            w.varint(*round);
            w.varint(*commit_index);
        }
        Message::CatchUp { from } => {
            w.u8(9);
            w.varint(*from);
        }
    }
}

/// Decodes one whole envelope; anything malformed is an error, never a panic.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let mut r = Reader { input: bytes };
    let (from, to) = decode_head(&mut r)?;
    let message = decode_message(&mut r)?;
    r.finish()?;
    Ok(Envelope { from, to, message })
}

/// Reads a Paxos message: its tag, then its fields.
pub fn decode_message(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    Ok(match r.u8()? {
        1 => Message::Prepare {
            ballot: r.ballot()?,
            first_slot: r.varint()?,
        },
        2 => {
            let ballot = r.ballot()?;
            let snapshot_slot = r.varint()?;
            let n = r.count()?;
            let mut accepted = Vec::with_capacity(n.min(RESERVE_ITEMS_MAX));
            for _ in 0..n {
                accepted.push(AcceptedEntry {
                    slot: r.varint()?,
                    ballot: r.ballot()?,
                    value: r.value()?,
                });
            }
            Message::Promise {
                ballot,
                accepted,
                snapshot_slot,
            }
        }
        3 => Message::Accept {
            ballot: r.ballot()?,
            slot: r.varint()?,
            value: r.value()?,
        },
        4 => Message::Accepted {
            ballot: r.ballot()?,
            slot: r.varint()?,
        },
        5 => Message::Nack {
            ballot: r.ballot()?,
            higher: r.ballot()?,
        },
        6 => Message::Commit {
            slot: r.varint()?,
            value: r.value()?,
        },
        7 => Message::Heartbeat {
            ballot: r.ballot()?,
            commit_index: r.varint()?,
            round: r.varint()?,
        },
        8 => Message::HeartbeatAck {
            ballot: r.ballot()?,
            round: r.varint()?,
            commit_index: r.varint()?,
        },
        9 => Message::CatchUp { from: r.varint()? },
        10 => Message::Chosen {
            ballot: r.ballot()?,
            slot: r.varint()?,
        },
        t => return Err(DecodeError::Tag(t)),
    })
}

/// Appends the encoding of `record` to `out`.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(VERSION);
    match record {
        Record::Promise(ballot) => {
            w.u8(1);
            w.ballot(*ballot);
        }
        Record::Accept {
            slot,
            ballot,
            value,
        } => {
            w.u8(2);
            w.varint(*slot);
            w.ballot(*ballot);
            w.value(value);
        }
        Record::Commit { slot, value } => {
            w.u8(3);
            w.varint(*slot);
            w.value(value);
        }
    }
}

/// Decodes one whole record.
pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader { input: bytes };
    r.version()?;
    let record = match r.u8()? {
        1 => Record::Promise(r.ballot()?),
        2 => Record::Accept {
            slot: r.varint()?,
            ballot: r.ballot()?,
            value: r.value()?,
        },
        3 => Record::Commit {
            slot: r.varint()?,
            value: r.value()?,
        },
        t => return Err(DecodeError::Tag(t)),
    };
    r.finish()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Value {
        Value::Batch(std::sync::Arc::from(vec![
            Command {
                client: 7,
                seq: u64::MAX,
                payload: vec![0, 255, 0],
            },
            Command {
                client: 1 << 40,
                seq: 1,
                payload: vec![],
            },
        ]))
    }

    fn every_message() -> Vec<Message> {
        let b = Ballot::new(300, 2);
        vec![
            Message::Prepare {
                ballot: b,
                first_slot: 1,
            },
            Message::Promise {
                ballot: b,
                accepted: vec![
                    AcceptedEntry {
                        slot: 3,
                        ballot: Ballot::new(1, 1),
                        value: Value::Noop,
                    },
                    AcceptedEntry {
                        slot: 4,
                        ballot: Ballot::new(2, 3),
                        value: batch(),
                    },
                ],
                snapshot_slot: 2,
            },
            Message::Accept {
                ballot: b,
                slot: 99,
                value: batch(),
            },
            Message::Accepted {
                ballot: b,
                slot: 99,
            },
            Message::Nack {
                ballot: b,
                higher: Ballot::new(u64::MAX, u64::MAX),
            },
            Message::Commit {
                slot: 5,
                value: Value::Noop,
            },
            Message::Commit {
                slot: 6,
                value: Value::Reconfigure(std::sync::Arc::new(Reconfiguration {
                    membership: Membership {
                        voters: [1, 2, u64::MAX].into(),
                        learners: [9].into(),
                    },
                    command: Command {
                        client: 3,
                        seq: 4,
                        payload: vec![1, 2],
                    },
                })),
            },
            Message::Chosen { ballot: b, slot: 5 },
            Message::Heartbeat {
                ballot: b,
                commit_index: 12,
                round: 4,
            },
            Message::HeartbeatAck {
                ballot: b,
                round: 4,
                commit_index: 11,
            },
            Message::CatchUp { from: 13 },
        ]
    }

    #[test]
    fn every_message_and_record_round_trips() {
        for message in every_message() {
            let e = Envelope {
                from: 1,
                to: 3,
                message,
            };
            let mut buf = Vec::new();
            encode_envelope(&e, &mut buf);
            assert_eq!(decode_envelope(&buf), Ok(e));
        }
        for record in [
            Record::Promise(Ballot::new(5, 1)),
            Record::Accept {
                slot: 8,
                ballot: Ballot::new(5, 1),
                value: batch(),
            },
            Record::Commit {
                slot: 8,
                value: Value::Noop,
            },
        ] {
            let mut buf = Vec::new();
            encode_record(&record, &mut buf);
            assert_eq!(decode_record(&buf), Ok(record));
        }
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        for message in every_message() {
            let mut buf = Vec::new();
            encode_envelope(
                &Envelope {
                    from: 1,
                    to: 2,
                    message,
                },
                &mut buf,
            );
            for cut in 0..buf.len() {
                assert!(decode_envelope(&buf[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert_eq!(decode_envelope(&longer), Err(DecodeError::Trailing(1)));
        }
        assert_eq!(decode_envelope(&[9, 1, 1, 1]), Err(DecodeError::Version(9)));
        assert_eq!(
            decode_envelope(&[VERSION, 1, 2, 200]),
            Err(DecodeError::Tag(200))
        );
        assert_eq!(
            decode_envelope(&[
                VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ]),
            Err(DecodeError::Overflow)
        );
        // A huge claimed length does not allocate: it is refused as truncated.
        assert_eq!(
            decode_record(&[VERSION, 3, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecodeError::Truncated)
        );
        // Pseudo-random garbage never panics.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_envelope(&bytes);
            let _ = decode_record(&bytes);
        }
    }
}
