//! What members say to each other beside the Paxos messages (Prepare,
//! Promise, Accept, ...): a follower hands a client command to the leader,
//! or asks it for a read index; snapshots stream to a lagging member in
//! chunks; members tell each other their client URLs.
//!
//! A forwarded command is answered by the follower itself: it waits until
//! it applies the command from the log, with the result every replica
//! computes. So the leader only ever answers "refused" or a read index.
//!
//! Wire form: one tag byte naming the message, then its fields in order,
//! integers little-endian, the last field's bytes running to the end of the
//! frame (the transport frames each message with its length).
//!
//! | tag | message | fields |
//! | --- | --- | --- |
//! | 1 | `Propose` | client u64, seq u64, command bytes |
//! | 2 | `Refused` | client u64, seq u64, leader u64 |
//! | 3 | `ReadIndex` | id u64 |
//! | 4 | `ReadIndexReply` | id u64, index u64 |
//! | 5 | `Chunk` | slot u64, offset u64, total u64, crc32c u32, bytes |
//! | 6 | `Attributes` | client URLs, newline-separated UTF-8 |

use paxos::NodeId;
use storage::SnapshotChunk;

/// A request or answer between members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// "Propose this for me": the command as it goes into the log, minus
    /// the leader's time stamp, which the leader adds.
    Propose {
        /// The client session.
        client: u64,
        /// Its sequence number.
        seq: u64,
        /// The encoded `kv::Command`.
        command: Vec<u8>,
    },
    /// The leader could not take a forwarded command.
    Refused {
        /// The client session.
        client: u64,
        /// Its sequence number.
        seq: u64,
        /// Who leads now, if the refuser knows (0: nobody known).
        leader: NodeId,
    },
    /// "Confirm your leadership and tell me your applied index."
    ReadIndex {
        /// The asker's id for the read.
        id: u64,
    },
    /// The answer: serve the read once applied up to `index`; `index` 0
    /// means the leader could not confirm.
    ReadIndexReply {
        /// The asker's id for the read.
        id: u64,
        /// The leader's applied index after its quorum round.
        index: u64,
    },
    /// One chunk of a snapshot for a lagging member.
    Chunk(SnapshotChunk),
    /// "These are my client URLs", told to every peer now and then, so
    /// that `MemberList` shows every member's.
    Attributes {
        /// The sender's advertised client URLs.
        client_urls: Vec<String>,
    },
}

/// Why bytes are not a forward frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed peer message")]
pub struct Malformed;

impl PeerMessage {
    /// Encodes the frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match self {
            PeerMessage::Propose {
                client,
                seq,
                command,
            } => {
                out.push(1);
                out.extend_from_slice(&client.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(command);
            }
            PeerMessage::Refused {
                client,
                seq,
                leader,
            } => {
                out.push(2);
                out.extend_from_slice(&client.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&leader.to_le_bytes());
            }
            PeerMessage::ReadIndex { id } => {
                out.push(3);
                out.extend_from_slice(&id.to_le_bytes());
            }
            PeerMessage::ReadIndexReply { id, index } => {
                out.push(4);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&index.to_le_bytes());
            }
            PeerMessage::Chunk(c) => {
                out.push(5);
                out.extend_from_slice(&c.index.to_le_bytes());
                out.extend_from_slice(&c.offset.to_le_bytes());
                out.extend_from_slice(&c.total_len.to_le_bytes());
                out.extend_from_slice(&c.checksum.to_le_bytes());
                out.extend_from_slice(&c.data);
            }
            PeerMessage::Attributes { client_urls } => {
                out.push(6);
                out.extend_from_slice(client_urls.join("\n").as_bytes());
            }
        }
        out
    }

    /// Decodes a frame body; anything malformed is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<PeerMessage, Malformed> {
        let u64_at = |at: usize| -> Result<u64, Malformed> {
            let raw: [u8; 8] = bytes
                .get(at..at + 8)
                .ok_or(Malformed)?
                .try_into()
                .map_err(|_| Malformed)?;
            Ok(u64::from_le_bytes(raw))
        };
        let exact = |len: usize| {
            if bytes.len() == len {
                Ok(())
            } else {
                Err(Malformed)
            }
        };
        match bytes.first() {
            Some(1) => Ok(PeerMessage::Propose {
                client: u64_at(1)?,
                seq: u64_at(9)?,
                command: bytes.get(17..).ok_or(Malformed)?.to_vec(),
            }),
            Some(2) => {
                exact(25)?;
                Ok(PeerMessage::Refused {
                    client: u64_at(1)?,
                    seq: u64_at(9)?,
                    leader: u64_at(17)?,
                })
            }
            Some(3) => {
                exact(9)?;
                Ok(PeerMessage::ReadIndex { id: u64_at(1)? })
            }
            Some(4) => {
                exact(17)?;
                Ok(PeerMessage::ReadIndexReply {
                    id: u64_at(1)?,
                    index: u64_at(9)?,
                })
            }
            Some(5) => {
                let raw: [u8; 4] = bytes
                    .get(25..29)
                    .ok_or(Malformed)?
                    .try_into()
                    .map_err(|_| Malformed)?;
                Ok(PeerMessage::Chunk(SnapshotChunk {
                    index: u64_at(1)?,
                    offset: u64_at(9)?,
                    total_len: u64_at(17)?,
                    checksum: u32::from_le_bytes(raw),
                    data: bytes.get(29..).ok_or(Malformed)?.to_vec(),
                }))
            }
            Some(6) => {
                let text =
                    std::str::from_utf8(bytes.get(1..).ok_or(Malformed)?).map_err(|_| Malformed)?;
                Ok(PeerMessage::Attributes {
                    client_urls: text
                        .split('\n')
                        .filter(|u| !u.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            }
            _ => Err(Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let frames = vec![
            PeerMessage::Propose {
                client: 7,
                seq: 1,
                command: vec![0, 1, 2],
            },
            PeerMessage::Refused {
                client: 7,
                seq: 1,
                leader: 3,
            },
            PeerMessage::ReadIndex { id: 9 },
            PeerMessage::ReadIndexReply { id: 9, index: 44 },
            PeerMessage::Chunk(SnapshotChunk {
                index: 5,
                offset: 64,
                total_len: 100,
                checksum: 0xdead_beef,
                data: vec![1; 36],
            }),
            PeerMessage::Attributes {
                client_urls: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://10.0.0.1:2379".into(),
                ],
            },
        ];
        for f in frames {
            let bytes = f.encode();
            assert_eq!(PeerMessage::decode(&bytes), Ok(f));
            for cut in 0..bytes.len().min(17) {
                let _ = PeerMessage::decode(&bytes[..cut]);
            }
        }
        assert_eq!(PeerMessage::decode(&[]), Err(Malformed));
        assert_eq!(PeerMessage::decode(&[9, 9, 9]), Err(Malformed));
        assert_eq!(PeerMessage::decode(&[3, 1]), Err(Malformed));
    }
}
