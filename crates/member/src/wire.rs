//! Everything one member sends another, in one codec: the Paxos messages
//! and the member's own [`PeerMessage`]s share a frame layout, so the
//! transport reads one kind of frame and checks one kind of address.
//!
//! Every frame is the Paxos codec's head (version byte, sender and
//! recipient as varints), then a tag byte, then the message's fields as
//! varints and length-prefixed bytes (`paxos::multi::codec`). Tags below
//! [`MEMBER_TAG_MIN`] are the Paxos messages (Prepare 1, Promise 2,
//! Accept 3, Accepted 4, Nack 5, Commit 6, Heartbeat 7, HeartbeatAck 8,
//! CatchUp 9, Chosen 10); from it up, the member's:
//!
//! | tag | message | fields |
//! | --- | --- | --- |
//! | 32 | `Propose` | client, seq, command bytes |
//! | 33 | `Refused` | client, seq, leader |
//! | 34 | `ReadIndex` | id |
//! | 35 | `ReadIndexReply` | id, index |
//! | 36 | `Chunk` | slot, offset, total, crc32c, bytes |
//! | 37 | `Attributes` | name (UTF-8), count, then each client URL as bytes (UTF-8) |
//! | 38 | `ChangeMembers` | client, seq, kind (1 add, 2 remove, 3 update, 4 promote: id, peer URLs for add and update, learner for add; 5 replace: removed ids, added ids with peer URLs) |
//! | 39 | `ChangeRefused` | client, seq, error code (`MemberError::code`) |
//!
//! Decoding never panics and reserves as the Paxos codec does (a count is
//! checked against the bytes left, a list reserves at most
//! `codec::RESERVE_ITEMS_MAX` items up front); a frame with bytes left over
//! is refused.

use paxos::NodeId;
use paxos::multi::Envelope;
use paxos::multi::codec::{
    self, DecodeError, MEMBER_TAG_MIN, Reader, Writer, decode_head, encode_head,
};
use storage::SnapshotChunk;

use kv::MemberChange;

use crate::PeerMessage;

const PROPOSE: u8 = MEMBER_TAG_MIN;
const REFUSED: u8 = MEMBER_TAG_MIN + 1;
const READ_INDEX: u8 = MEMBER_TAG_MIN + 2;
const READ_INDEX_REPLY: u8 = MEMBER_TAG_MIN + 3;
const CHUNK: u8 = MEMBER_TAG_MIN + 4;
const ATTRIBUTES: u8 = MEMBER_TAG_MIN + 5;
const CHANGE_MEMBERS: u8 = MEMBER_TAG_MIN + 6;
const CHANGE_REFUSED: u8 = MEMBER_TAG_MIN + 7;

/// One frame between members: a Paxos message or one of the member's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Prepare, Promise, Accept, ... for the core.
    Paxos(Envelope),
    /// A forwarded proposal, a read index, a snapshot chunk, ... for the
    /// member.
    Peer {
        /// The sender.
        from: NodeId,
        /// The recipient.
        to: NodeId,
        /// What it says.
        message: PeerMessage,
    },
}

impl Frame {
    /// The sender, whichever kind: the transport checks it against the
    /// authenticated connection.
    pub fn from(&self) -> NodeId {
        match self {
            Frame::Paxos(envelope) => envelope.from,
            Frame::Peer { from, .. } => *from,
        }
    }

    /// The recipient, whichever kind.
    pub fn to(&self) -> NodeId {
        match self {
            Frame::Paxos(envelope) => envelope.to,
            Frame::Peer { to, .. } => *to,
        }
    }
}

/// Appends the encoding of a Paxos envelope (the same bytes as
/// [`codec::encode_envelope`]).
pub fn encode_envelope(envelope: &Envelope, out: &mut Vec<u8>) {
    codec::encode_envelope(envelope, out);
}

/// Appends the encoding of a member's message from `from` to `to`.
pub fn encode_peer(from: NodeId, to: NodeId, message: &PeerMessage, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    encode_head(&mut w, from, to);
    match message {
        PeerMessage::Propose {
            client,
            seq,
            command,
        } => {
            w.u8(PROPOSE);
            w.varint(*client);
            w.varint(*seq);
            w.bytes(command);
        }
        PeerMessage::Refused {
            client,
            seq,
            leader,
        } => {
            w.u8(REFUSED);
            w.varint(*client);
            w.varint(*seq);
            w.varint(*leader);
        }
        PeerMessage::ReadIndex { id } => {
            w.u8(READ_INDEX);
            w.varint(*id);
        }
        PeerMessage::ReadIndexReply { id, index } => {
            w.u8(READ_INDEX_REPLY);
            w.varint(*id);
            w.varint(*index);
        }
        PeerMessage::Chunk(c) => {
            w.u8(CHUNK);
            w.varint(c.index);
            w.varint(c.offset);
            w.varint(c.total_len);
            w.varint(u64::from(c.checksum));
            w.bytes(&c.data);
        }
        PeerMessage::Attributes { name, client_urls } => {
            w.u8(ATTRIBUTES);
            w.bytes(name.as_bytes());
            write_urls(&mut w, client_urls);
        }
        PeerMessage::ChangeMembers {
            client,
            seq,
            change,
        } => {
            w.u8(CHANGE_MEMBERS);
            w.varint(*client);
            w.varint(*seq);
            match change {
                MemberChange::Add {
                    id,
                    peer_urls,
                    is_learner,
                } => {
                    w.u8(1);
                    w.varint(*id);
                    write_urls(&mut w, peer_urls);
                    w.u8(u8::from(*is_learner));
                }
                MemberChange::Remove { id } => {
                    w.u8(2);
                    w.varint(*id);
                }
                MemberChange::Update { id, peer_urls } => {
                    w.u8(3);
                    w.varint(*id);
                    write_urls(&mut w, peer_urls);
                }
                MemberChange::Promote { id } => {
                    w.u8(4);
                    w.varint(*id);
                }
                MemberChange::Replace { remove, add } => {
                    w.u8(5);
                    w.varint(remove.len() as u64);
                    for id in remove {
                        w.varint(*id);
                    }
                    w.varint(add.len() as u64);
                    for (id, urls) in add {
                        w.varint(*id);
                        write_urls(&mut w, urls);
                    }
                }
            }
        }
        PeerMessage::ChangeRefused { client, seq, error } => {
            w.u8(CHANGE_REFUSED);
            w.varint(*client);
            w.varint(*seq);
            w.u8(*error);
        }
    }
}

fn write_urls(w: &mut Writer<'_>, urls: &[String]) {
    w.varint(urls.len() as u64);
    for url in urls {
        w.bytes(url.as_bytes());
    }
}

fn read_urls(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.count()?;
    let mut urls = Vec::with_capacity(n.min(codec::RESERVE_ITEMS_MAX));
    for _ in 0..n {
        let url = std::str::from_utf8(r.bytes()?).map_err(|_| DecodeError::Text)?;
        urls.push(url.to_string());
    }
    Ok(urls)
}

/// Appends the encoding of any frame.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Paxos(envelope) => encode_envelope(envelope, out),
        Frame::Peer { from, to, message } => encode_peer(*from, *to, message, out),
    }
}

/// Decodes one whole frame; anything malformed is an error, never a panic.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(bytes);
    let (from, to) = decode_head(&mut r)?;
    let frame = if r.peek()? < MEMBER_TAG_MIN {
        Frame::Paxos(Envelope {
            from,
            to,
            message: codec::decode_message(&mut r)?,
        })
    } else {
        Frame::Peer {
            from,
            to,
            message: decode_peer(&mut r)?,
        }
    };
    r.finish()?;
    Ok(frame)
}

fn decode_peer(r: &mut Reader<'_>) -> Result<PeerMessage, DecodeError> {
    Ok(match r.u8()? {
        PROPOSE => PeerMessage::Propose {
            client: r.varint()?,
            seq: r.varint()?,
            command: r.bytes()?.to_vec(),
        },
        REFUSED => PeerMessage::Refused {
            client: r.varint()?,
            seq: r.varint()?,
            leader: r.varint()?,
        },
        READ_INDEX => PeerMessage::ReadIndex { id: r.varint()? },
        READ_INDEX_REPLY => PeerMessage::ReadIndexReply {
            id: r.varint()?,
            index: r.varint()?,
        },
        CHUNK => PeerMessage::Chunk(SnapshotChunk {
            index: r.varint()?,
            offset: r.varint()?,
            total_len: r.varint()?,
            checksum: u32::try_from(r.varint()?).map_err(|_| DecodeError::Overflow)?,
            data: r.bytes()?.to_vec(),
        }),
        ATTRIBUTES => PeerMessage::Attributes {
            name: std::str::from_utf8(r.bytes()?)
                .map_err(|_| DecodeError::Text)?
                .to_string(),
            client_urls: read_urls(r)?,
        },
        CHANGE_MEMBERS => {
            let client = r.varint()?;
            let seq = r.varint()?;
            let change = match r.u8()? {
                1 => MemberChange::Add {
                    id: r.varint()?,
                    peer_urls: read_urls(r)?,
                    is_learner: r.u8()? != 0,
                },
                2 => MemberChange::Remove { id: r.varint()? },
                3 => MemberChange::Update {
                    id: r.varint()?,
                    peer_urls: read_urls(r)?,
                },
                4 => MemberChange::Promote { id: r.varint()? },
                5 => {
                    let n = r.count()?;
                    let mut remove = Vec::with_capacity(n.min(codec::RESERVE_ITEMS_MAX));
                    for _ in 0..n {
                        remove.push(r.varint()?);
                    }
                    let n = r.count()?;
                    let mut add = Vec::with_capacity(n.min(codec::RESERVE_ITEMS_MAX));
                    for _ in 0..n {
                        add.push((r.varint()?, read_urls(r)?));
                    }
                    MemberChange::Replace { remove, add }
                }
                t => return Err(DecodeError::Tag(t)),
            };
            PeerMessage::ChangeMembers {
                client,
                seq,
                change,
            }
        }
        CHANGE_REFUSED => PeerMessage::ChangeRefused {
            client: r.varint()?,
            seq: r.varint()?,
            error: r.u8()?,
        },
        t => return Err(DecodeError::Tag(t)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::Ballot;
    use paxos::multi::Message;

    fn every_frame() -> Vec<Frame> {
        let peer = |message| Frame::Peer {
            from: 2,
            to: 1,
            message,
        };
        vec![
            Frame::Paxos(Envelope {
                from: 1,
                to: 2,
                message: Message::Prepare {
                    ballot: Ballot::new(3, 1),
                    first_slot: 9,
                },
            }),
            peer(PeerMessage::Propose {
                client: 7,
                seq: 1,
                command: vec![0, 1, 2],
            }),
            peer(PeerMessage::Refused {
                client: 7,
                seq: 1,
                leader: 3,
            }),
            peer(PeerMessage::ReadIndex { id: 9 }),
            peer(PeerMessage::ChangeMembers {
                client: 4,
                seq: 5,
                change: MemberChange::Add {
                    id: u64::MAX,
                    peer_urls: vec!["http://127.0.0.1:2380".into()],
                    is_learner: true,
                },
            }),
            peer(PeerMessage::ChangeMembers {
                client: 4,
                seq: 6,
                change: MemberChange::Update {
                    id: 3,
                    peer_urls: vec![],
                },
            }),
            peer(PeerMessage::ChangeMembers {
                client: 4,
                seq: 7,
                change: MemberChange::Remove { id: 3 },
            }),
            peer(PeerMessage::ChangeMembers {
                client: 4,
                seq: 8,
                change: MemberChange::Promote { id: 3 },
            }),
            peer(PeerMessage::ChangeMembers {
                client: 4,
                seq: 9,
                change: MemberChange::Replace {
                    remove: vec![1, 2],
                    add: vec![(7, vec!["a".into()]), (8, vec![])],
                },
            }),
            peer(PeerMessage::ChangeRefused {
                client: 4,
                seq: 8,
                error: 17,
            }),
            peer(PeerMessage::ReadIndexReply { id: 9, index: 44 }),
            peer(PeerMessage::Chunk(SnapshotChunk {
                index: 5,
                offset: 64,
                total_len: 100,
                checksum: 0xdead_beef,
                data: vec![1; 36],
            })),
            peer(PeerMessage::Attributes {
                name: "infra1".into(),
                client_urls: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://10.0.0.1:2379".into(),
                ],
            }),
        ]
    }

    #[test]
    fn every_frame_round_trips_and_every_cut_is_refused() {
        for frame in every_frame() {
            let mut bytes = Vec::new();
            encode_frame(&frame, &mut bytes);
            assert_eq!(decode_frame(&bytes), Ok(frame.clone()));
            for cut in 0..bytes.len() {
                assert!(
                    decode_frame(&bytes[..cut]).is_err(),
                    "{frame:?} cut at {cut}"
                );
            }
            bytes.push(0);
            assert_eq!(decode_frame(&bytes), Err(DecodeError::Trailing(1)));
        }
    }

    #[test]
    fn a_paxos_frame_is_the_paxos_codecs_envelope() {
        let Some(Frame::Paxos(envelope)) = every_frame().into_iter().next() else {
            unreachable!("the first frame is a Paxos one");
        };
        let mut ours = Vec::new();
        encode_frame(&Frame::Paxos(envelope.clone()), &mut ours);
        let mut theirs = Vec::new();
        codec::encode_envelope(&envelope, &mut theirs);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn unknown_tags_and_bad_text_are_refused() {
        let mut bytes = Vec::new();
        encode_head(&mut Writer(&mut bytes), 1, 2);
        let head = bytes.len();
        for tag in [0, 11, 31, CHANGE_REFUSED + 1, 255] {
            bytes.truncate(head);
            bytes.push(tag);
            assert_eq!(
                decode_frame(&bytes),
                Err(DecodeError::Tag(tag)),
                "tag {tag}"
            );
        }
        bytes.truncate(head);
        bytes.extend_from_slice(&[ATTRIBUTES, 2, 0xff, 0xfe, 0]);
        assert_eq!(decode_frame(&bytes), Err(DecodeError::Text));
        bytes.truncate(head);
        bytes.extend_from_slice(&[ATTRIBUTES, 0, 1, 2, 0xff, 0xfe]);
        assert_eq!(decode_frame(&bytes), Err(DecodeError::Text));
    }
}
