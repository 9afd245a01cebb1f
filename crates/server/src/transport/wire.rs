//! The peer wire format: length-prefixed frames and the membership handshake.
//!
//! Every frame is a `u32` little-endian payload length followed by the
//! payload. After a TCP connection opens, the two sides run a handshake in
//! three frames before any envelope flows:
//!
//! ```text
//! acceptor -> dialer   Challenge { MAGIC, VERSION, nonce_a }
//! dialer   -> acceptor Hello     { MAGIC, VERSION, from, to, nonce_d, proof_d }
//! acceptor -> dialer   Welcome   { MAGIC, proof_a }
//! ```
//!
//! Each proof is HMAC-SHA256 keyed with the cluster token over both nonces
//! and both ids, with a different label per side so one side's proof can
//! never be replayed as the other's. The acceptor's fresh nonce makes a
//! recorded hello useless on a new connection; the dialer's nonce does the
//! same for a recorded welcome. From then on the connection carries frames
//! one way only, dialer to acceptor, each an envelope encoded by
//! [`paxos::multi::codec::encode_envelope`].
//!
//! A member that joins an existing cluster does not know its own id yet
//! (a `MemberAdd` drew it at random): it dials a member with both ids 0,
//! the acceptor answers the welcome with one more frame, the directory
//! (every member's id and peer URL, as [`encode_directory`] writes it),
//! and closes. The joiner finds itself in it by its peer URL.
//!
//! The token is never sent. The frames are not encrypted: the handshake
//! keeps strangers out, it does not hide the traffic.
//!
//! Public so tools and tests can speak the protocol.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use paxos::NodeId;
use sha2::Sha256;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Opens every handshake frame: a stray client of another protocol is told
/// apart at once.
pub const MAGIC: [u8; 8] = *b"synod-pp";

/// The peer protocol version this build speaks; a peer must speak the same.
pub const VERSION: u16 = 1;

/// Bytes in a handshake nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes in a handshake proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;

/// Largest frame read before the peer is authenticated: a stranger cannot
/// make us buffer more than this.
pub const HANDSHAKE_FRAME_BYTES_MAX: u32 = 128;

/// Bytes in a frame's length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

const CHALLENGE_BYTES: usize = MAGIC.len() + 2 + NONCE_BYTES;
const HELLO_BYTES: usize = MAGIC.len() + 2 + 8 + 8 + NONCE_BYTES + PROOF_BYTES;
const WELCOME_BYTES: usize = MAGIC.len() + PROOF_BYTES;

/// Domain labels keeping the two proofs apart.
const DIALER_LABEL: &[u8] = b"synod peer handshake: dialer";
const ACCEPTOR_LABEL: &[u8] = b"synod peer handshake: acceptor";

/// Why a frame could not be read.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The connection ended cleanly between two frames.
    #[error("connection closed")]
    Closed,
    /// The connection ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// The length prefix is above the limit; nothing of the payload is read.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame's payload into `buf` (cleared first), refusing a length
/// above `frame_bytes_max` before reading any of it.
///
/// Memory grows with the bytes actually received, not with the announced
/// length, so a peer that announces a large frame and stalls holds little.
pub async fn read_frame<R>(
    reader: &mut R,
    frame_bytes_max: u32,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut filled = 0;
    while filled < prefix.len() {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated
            });
        }
        filled += n;
    }
    let len = u32::from_le_bytes(prefix);
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    buf.clear();
    let read = reader.take(u64::from(len)).read_to_end(buf).await?;
    if read != len as usize {
        return Err(FrameError::Truncated);
    }
    Ok(())
}

/// Writes one frame: the length prefix, then the payload.
///
/// The caller checks the payload against the receiver's limit; a payload
/// longer than `u32::MAX` is refused here.
pub async fn write_frame<W>(writer: &mut W, payload: &[u8]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let len = u32::try_from(payload.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame longer than u32")
    })?;
    writer.write_all(&len.to_le_bytes()).await?;
    writer.write_all(payload).await
}

/// Why a handshake failed. Either side closes the connection on any of
/// these; the acceptor says nothing to the dialer about which one it was.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The frame could not be read.
    #[error("handshake frame: {0}")]
    Frame(#[from] FrameError),
    /// The frame does not start with [`MAGIC`]: not a synod peer.
    #[error("not a synod peer (bad magic)")]
    BadMagic,
    /// The frame has the wrong length for its step.
    #[error("malformed handshake frame of {0} bytes")]
    Malformed(usize),
    /// The other side speaks another protocol version.
    #[error("peer protocol version {theirs}, this build speaks {VERSION}")]
    Version {
        /// The version the other side announced.
        theirs: u16,
    },
    /// The dialer claims an id that is not a member (or is our own).
    #[error("member {0} is not a peer of this member")]
    NotAMember(NodeId),
    /// The dialer meant to reach another member: its address book is wrong.
    #[error("dialer addressed member {to}, this is member {me}")]
    WrongRecipient {
        /// The member the dialer meant.
        to: NodeId,
        /// This member.
        me: NodeId,
    },
    /// The proof does not match the cluster token.
    #[error("proof does not match the cluster token")]
    BadProof,
    /// No randomness for a nonce; no handshake can be safe without one.
    #[error("no randomness for a nonce: {0}")]
    Random(getrandom::Error),
    /// Writing a handshake frame failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Which side of the handshake a proof speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The side that opened the connection and sends envelopes.
    Dialer,
    /// The side that accepted the connection and receives envelopes.
    Acceptor,
}

/// What a proof covers: both nonces and both ids of one handshake.
#[derive(Clone, Copy, Debug)]
pub struct Transcript {
    /// The acceptor's nonce.
    pub nonce_acceptor: [u8; NONCE_BYTES],
    /// The dialer's nonce.
    pub nonce_dialer: [u8; NONCE_BYTES],
    /// The dialer's member id.
    pub dialer: NodeId,
    /// The acceptor's member id.
    pub acceptor: NodeId,
}

impl Transcript {
    fn mac(&self, token: &[u8], side: Side) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(token) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(match side {
            Side::Dialer => DIALER_LABEL,
            Side::Acceptor => ACCEPTOR_LABEL,
        });
        mac.update(&VERSION.to_le_bytes());
        mac.update(&self.nonce_acceptor);
        mac.update(&self.nonce_dialer);
        mac.update(&self.dialer.to_le_bytes());
        mac.update(&self.acceptor.to_le_bytes());
        mac
    }

    /// The proof `side` sends: it knows the token and saw this transcript.
    pub fn proof(&self, token: &[u8], side: Side) -> [u8; PROOF_BYTES] {
        self.mac(token, side).finalize().into_bytes().into()
    }

    /// Checks `side`'s proof in constant time.
    pub fn verify(&self, token: &[u8], side: Side, proof: &[u8]) -> bool {
        self.mac(token, side).verify_slice(proof).is_ok()
    }
}

fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(HandshakeError::Random)?;
    Ok(nonce)
}

/// Splits `n` bytes off the front of `input`; the caller checked the length.
fn take<const N: usize>(input: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let (head, rest) = input.split_at(N);
    out.copy_from_slice(head);
    *input = rest;
    out
}

/// Reads a handshake frame of exactly `len` bytes that starts with the magic;
/// returns what follows the magic.
async fn read_step<'b, S>(
    stream: &mut S,
    len: usize,
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8], HandshakeError>
where
    S: AsyncRead + Unpin,
{
    read_frame(stream, HANDSHAKE_FRAME_BYTES_MAX, buf).await?;
    if !buf.starts_with(&MAGIC) {
        return Err(HandshakeError::BadMagic);
    }
    if buf.len() != len {
        return Err(HandshakeError::Malformed(buf.len()));
    }
    Ok(&buf[MAGIC.len()..])
}

/// The dialer's side: proves to the acceptor that `me` is a member that
/// knows `token`, and checks that the acceptor is member `to` and knows it
/// too. On success the stream is ready for envelope frames.
pub async fn dial<S>(
    stream: &mut S,
    me: NodeId,
    to: NodeId,
    token: &[u8],
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(HANDSHAKE_FRAME_BYTES_MAX as usize);
    let mut rest = read_step(stream, CHALLENGE_BYTES, &mut buf).await?;
    let theirs = u16::from_le_bytes(take(&mut rest));
    if theirs != VERSION {
        return Err(HandshakeError::Version { theirs });
    }
    let transcript = Transcript {
        nonce_acceptor: take(&mut rest),
        nonce_dialer: nonce()?,
        dialer: me,
        acceptor: to,
    };

    let mut hello = Vec::with_capacity(HELLO_BYTES);
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(&VERSION.to_le_bytes());
    hello.extend_from_slice(&me.to_le_bytes());
    hello.extend_from_slice(&to.to_le_bytes());
    hello.extend_from_slice(&transcript.nonce_dialer);
    hello.extend_from_slice(&transcript.proof(token, Side::Dialer));
    write_frame(stream, &hello).await?;
    stream.flush().await?;

    let rest = read_step(stream, WELCOME_BYTES, &mut buf).await?;
    if !transcript.verify(token, Side::Acceptor, rest) {
        return Err(HandshakeError::BadProof);
    }
    Ok(())
}

/// Who completed an acceptor's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialer {
    /// A member, by id: its frames follow.
    Member(NodeId),
    /// A member joining, asking for the directory (both ids 0).
    Newcomer,
}

/// Encodes the directory a joining member asks for: each member's id and
/// peer URL.
pub fn encode_directory(directory: &[(NodeId, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = paxos::multi::codec::Writer(&mut out);
    w.varint(directory.len() as u64);
    for (id, url) in directory {
        w.varint(*id);
        w.bytes(url.as_bytes());
    }
    out
}

/// Decodes [`encode_directory`]'s bytes; malformed input is an error.
pub fn decode_directory(bytes: &[u8]) -> Result<Vec<(NodeId, String)>, HandshakeError> {
    let bad = |_| HandshakeError::Malformed(bytes.len());
    let mut r = paxos::multi::codec::Reader::new(bytes);
    let n = r.count().map_err(bad)?;
    let mut out = Vec::with_capacity(n.min(paxos::multi::codec::RESERVE_ITEMS_MAX));
    for _ in 0..n {
        let id = r.varint().map_err(bad)?;
        let url = std::str::from_utf8(r.bytes().map_err(bad)?)
            .map_err(|_| HandshakeError::Malformed(bytes.len()))?;
        out.push((id, url.to_string()));
    }
    r.finish().map_err(bad)?;
    Ok(out)
}

/// Largest directory frame a joiner reads.
pub const DIRECTORY_FRAME_BYTES_MAX: u32 = 1 << 20;

/// A joining member's side: proves it knows `token`, checks the acceptor
/// does too, and reads the directory.
pub async fn ask_directory<S>(
    stream: &mut S,
    token: &[u8],
) -> Result<Vec<(NodeId, String)>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    dial(stream, 0, 0, token).await?;
    let mut buf = Vec::new();
    read_frame(stream, DIRECTORY_FRAME_BYTES_MAX, &mut buf).await?;
    decode_directory(&buf)
}

/// The acceptor's side: challenges the dialer, and returns its member id
/// once it has proved it is one of `members` (never `me`) and knows
/// `token` (or that it is a newcomer asking for the directory, which the
/// caller then sends). Frames from the connection may be trusted as that
/// member's only after this returns.
pub async fn accept<S>(
    stream: &mut S,
    me: NodeId,
    members: &BTreeSet<NodeId>,
    token: &[u8],
) -> Result<Dialer, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce_acceptor = nonce()?;
    let mut challenge = Vec::with_capacity(CHALLENGE_BYTES);
    challenge.extend_from_slice(&MAGIC);
    challenge.extend_from_slice(&VERSION.to_le_bytes());
    challenge.extend_from_slice(&nonce_acceptor);
    write_frame(stream, &challenge).await?;
    stream.flush().await?;

    let mut buf = Vec::with_capacity(HANDSHAKE_FRAME_BYTES_MAX as usize);
    let mut rest = read_step(stream, HELLO_BYTES, &mut buf).await?;
    let theirs = u16::from_le_bytes(take(&mut rest));
    if theirs != VERSION {
        return Err(HandshakeError::Version { theirs });
    }
    let from = NodeId::from_le_bytes(take(&mut rest));
    let to = NodeId::from_le_bytes(take(&mut rest));
    let transcript = Transcript {
        nonce_acceptor,
        nonce_dialer: take(&mut rest),
        dialer: from,
        acceptor: to,
    };
    // Check the proof before saying anything about ids, so a stranger
    // learns nothing about the membership from which error it would cause.
    if !transcript.verify(token, Side::Dialer, rest) {
        return Err(HandshakeError::BadProof);
    }
    let newcomer = from == 0 && to == 0;
    if !newcomer {
        if from == me || !members.contains(&from) {
            return Err(HandshakeError::NotAMember(from));
        }
        if to != me {
            return Err(HandshakeError::WrongRecipient { to, me });
        }
    }

    let mut welcome = Vec::with_capacity(WELCOME_BYTES);
    welcome.extend_from_slice(&MAGIC);
    welcome.extend_from_slice(&transcript.proof(token, Side::Acceptor));
    write_frame(stream, &welcome).await?;
    stream.flush().await?;
    Ok(if newcomer {
        Dialer::Newcomer
    } else {
        Dialer::Member(from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            nonce_acceptor: [1; NONCE_BYTES],
            nonce_dialer: [2; NONCE_BYTES],
            dialer: 1,
            acceptor: 2,
        }
    }

    #[test]
    fn proofs_depend_on_token_side_and_transcript() {
        let t = transcript();
        let proof = t.proof(b"secret", Side::Dialer);
        assert!(t.verify(b"secret", Side::Dialer, &proof));
        assert!(!t.verify(b"other", Side::Dialer, &proof));
        assert!(
            !t.verify(b"secret", Side::Acceptor, &proof),
            "reflected proof"
        );
        let mut changed = t;
        changed.dialer = 3;
        assert!(!changed.verify(b"secret", Side::Dialer, &proof));
        let mut changed = t;
        changed.nonce_acceptor[0] ^= 1;
        assert!(!changed.verify(b"secret", Side::Dialer, &proof));
        assert!(!t.verify(b"secret", Side::Dialer, &proof[..16]));
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused_before_reading() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").await.ok();
        write_frame(&mut wire, b"").await.ok();
        wire.extend_from_slice(&1000u32.to_le_bytes());
        let mut reader = wire.as_slice();
        let mut buf = Vec::new();
        assert!(read_frame(&mut reader, 100, &mut buf).await.is_ok());
        assert_eq!(buf, b"hello");
        assert!(read_frame(&mut reader, 100, &mut buf).await.is_ok());
        assert!(buf.is_empty());
        assert!(matches!(
            read_frame(&mut reader, 100, &mut buf).await,
            Err(FrameError::TooLarge {
                len: 1000,
                max: 100
            })
        ));
    }

    #[tokio::test]
    async fn truncated_and_closed_are_told_apart() {
        let mut buf = Vec::new();
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_frame(&mut empty, 100, &mut buf).await,
            Err(FrameError::Closed)
        ));
        let mut half_prefix: &[u8] = &[5, 0];
        assert!(matches!(
            read_frame(&mut half_prefix, 100, &mut buf).await,
            Err(FrameError::Truncated)
        ));
        let mut half_payload: &[u8] = &[5, 0, 0, 0, b'a'];
        assert!(matches!(
            read_frame(&mut half_payload, 100, &mut buf).await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test]
    async fn handshake_admits_a_member_and_refuses_a_wrong_token() {
        let members: BTreeSet<NodeId> = [1, 3].into_iter().collect();
        for (token, expect_ok) in [(&b"right"[..], true), (&b"wrong"[..], false)] {
            let (mut a, mut d) = tokio::io::duplex(1024);
            let acceptor = tokio::spawn({
                let members = members.clone();
                async move { accept(&mut a, 2, &members, b"right").await }
            });
            let dialed = dial(&mut d, 1, 2, token).await;
            drop(d);
            let accepted = acceptor.await.ok();
            if expect_ok {
                assert!(dialed.is_ok());
                assert!(matches!(accepted, Some(Ok(Dialer::Member(1)))));
            } else {
                assert!(dialed.is_err());
                assert!(matches!(accepted, Some(Err(HandshakeError::BadProof))));
            }
        }
    }

    #[tokio::test]
    async fn handshake_refuses_a_non_member_and_a_misaddressed_dialer() {
        let members: BTreeSet<NodeId> = [1, 3].into_iter().collect();
        for (from, to) in [(4, 2), (2, 2), (1, 3)] {
            let (mut a, mut d) = tokio::io::duplex(1024);
            let acceptor = tokio::spawn({
                let members = members.clone();
                async move { accept(&mut a, 2, &members, b"t").await }
            });
            assert!(dial(&mut d, from, to, b"t").await.is_err());
            let accepted = acceptor.await.ok();
            assert!(
                matches!(
                    accepted,
                    Some(Err(
                        HandshakeError::NotAMember(_) | HandshakeError::WrongRecipient { .. }
                    ))
                ),
                "{from}->{to}: {accepted:?}"
            );
        }
    }
}
