//! The bytes `Maintenance.Snapshot` streams, laid out so that
//! `etcdctl snapshot save` accepts them and synod can read them back.
//!
//! etcd streams its bbolt database file (always a whole number of 512-byte
//! sectors; bbolt pages are 4 KiB) and then, as the last message, the
//! SHA-256 of everything it sent. `etcdctl snapshot save` refuses a file
//! whose size is not `512·n + 32` ("sha256 checksum not found"), and
//! `snapshot restore` checks the digest. synod's snapshot
//! ([`crate::api::Backend::snapshot`]) is not a bbolt file and has any
//! length, so it travels in an envelope:
//!
//! ```text
//! [ snapshot bytes ][ zeros ][ "synodsnp" ][ snapshot length, u64 LE ]   (a multiple of 512 bytes)
//! [ SHA-256 of all of the above ]                                        (32 bytes, last message)
//! ```
//!
//! [`open`] checks a saved file and returns the snapshot bytes inside.
//! etcd's own tools (`etcdutl snapshot status/restore`) cannot read the
//! envelope: they expect bbolt.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::codegen::tokio_stream::Stream;

use crate::proto::etcdserverpb as pb;

/// etcd's sector rule: the data part of a snapshot file is a multiple of
/// this many bytes.
pub const SECTOR: usize = 512;
/// Length of the SHA-256 digest that ends the stream.
pub const DIGEST_LEN: usize = 32;
/// Identifies synod's envelope.
pub const MAGIC: &[u8; 8] = b"synodsnp";
/// Length of the envelope's trailer (magic and length).
const TRAILER_LEN: usize = MAGIC.len() + 8;
/// Bytes of snapshot per streamed message.
pub const CHUNK: usize = 64 * 1024;

/// Why a snapshot file does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFileError {
    /// The size is not `512·n + 32`: no digest at the end (etcdctl's
    /// "sha256 checksum not found").
    #[error("sha256 checksum not found [bytes: {0}]")]
    NoChecksum(usize),
    /// The digest does not match the data.
    #[error("snapshot sha256 checksum mismatch")]
    ChecksumMismatch,
    /// The data is not a synod envelope.
    #[error("not a synod snapshot")]
    NotSynod,
}

/// The data part of a snapshot file (without the digest): the snapshot,
/// zero padding, and the trailer, a multiple of [`SECTOR`] bytes.
pub fn envelope(mut snapshot: Vec<u8>) -> Vec<u8> {
    let len = snapshot.len();
    let total = (len + TRAILER_LEN).div_ceil(SECTOR) * SECTOR;
    snapshot.resize(total - TRAILER_LEN, 0);
    snapshot.extend_from_slice(MAGIC);
    snapshot.extend_from_slice(&(len as u64).to_le_bytes());
    snapshot
}

/// The snapshot bytes inside a saved snapshot file (data and digest, as
/// `etcdctl snapshot save` writes it), after checking the digest.
pub fn open(file: &[u8]) -> Result<&[u8], SnapshotFileError> {
    if file.len() % SECTOR != DIGEST_LEN || file.len() < SECTOR + DIGEST_LEN {
        return Err(SnapshotFileError::NoChecksum(file.len()));
    }
    let (data, digest) = file.split_at(file.len() - DIGEST_LEN);
    if Sha256::digest(data).as_slice() != digest {
        return Err(SnapshotFileError::ChecksumMismatch);
    }
    let (body, trailer) = data.split_at(data.len() - TRAILER_LEN);
    let (magic, len) = trailer.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(SnapshotFileError::NotSynod);
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(len);
    let len =
        usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| SnapshotFileError::NotSynod)?;
    if len > body.len() || body[len..].iter().any(|&b| b != 0) {
        return Err(SnapshotFileError::NotSynod);
    }
    Ok(&body[..len])
}

/// The `Maintenance.Snapshot` response stream: the envelope in [`CHUNK`]
/// pieces with etcd's `remaining_bytes`, then one message holding the
/// SHA-256 of everything sent (`remaining_bytes` 0), as etcd sends it.
#[derive(Debug)]
pub struct SnapshotStream {
    data: Vec<u8>,
    sent: usize,
    digest: Option<Sha256>,
    header: Option<pb::ResponseHeader>,
    version: String,
}

impl SnapshotStream {
    /// A stream of `snapshot` (the backend's bytes); the first message
    /// carries `header`, every message the server `version`.
    pub fn new(snapshot: Vec<u8>, header: Option<pb::ResponseHeader>, version: &str) -> Self {
        SnapshotStream {
            data: envelope(snapshot),
            sent: 0,
            digest: Some(Sha256::new()),
            header,
            version: version.to_owned(),
        }
    }

    fn next_message(&mut self) -> Option<pb::SnapshotResponse> {
        let digest = self.digest.as_mut()?;
        if self.sent < self.data.len() {
            let end = (self.sent + CHUNK).min(self.data.len());
            let blob = self.data[self.sent..end].to_vec();
            digest.update(&blob);
            self.sent = end;
            return Some(pb::SnapshotResponse {
                header: self.header.take(),
                remaining_bytes: (self.data.len() - end) as u64,
                blob,
                version: self.version.clone(),
            });
        }
        let digest = self.digest.take()?;
        self.data = Vec::new();
        Some(pb::SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: digest.finalize().to_vec(),
            version: self.version.clone(),
        })
    }
}

impl Stream for SnapshotStream {
    type Item = Result<pb::SnapshotResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.next_message().map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reassemble(snapshot: Vec<u8>) -> (Vec<pb::SnapshotResponse>, Vec<u8>) {
        let mut stream = SnapshotStream::new(snapshot, None, "3.5.0");
        let mut messages = Vec::new();
        while let Some(m) = stream.next_message() {
            messages.push(m);
        }
        let file = messages.iter().flat_map(|m| m.blob.clone()).collect();
        (messages, file)
    }

    #[test]
    fn envelopes_open_back_to_the_snapshot_for_every_length() {
        for len in [
            0usize,
            1,
            495,
            496,
            497,
            511,
            512,
            4096,
            CHUNK - 16,
            CHUNK,
            3 * CHUNK + 7,
        ] {
            let snapshot: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (messages, file) = reassemble(snapshot.clone());
            assert_eq!(
                file.len() % SECTOR,
                DIGEST_LEN,
                "etcdctl's size rule, len {len}"
            );
            assert_eq!(open(&file), Ok(&snapshot[..]), "len {len}");
            let last = messages.last().expect("digest message");
            assert_eq!(last.remaining_bytes, 0);
            assert_eq!(last.blob.len(), DIGEST_LEN);
            // remaining_bytes counts down to zero over the data messages.
            let data = &messages[..messages.len() - 1];
            assert_eq!(data.last().map(|m| m.remaining_bytes), Some(0));
            assert!(
                data.windows(2)
                    .all(|w| w[0].remaining_bytes > w[1].remaining_bytes)
            );
        }
    }

    #[test]
    fn damaged_files_are_refused() {
        let (_, mut file) = reassemble(b"state".to_vec());
        assert_eq!(
            open(&file[..file.len() - 1]),
            Err(SnapshotFileError::NoChecksum(file.len() - 1))
        );
        file[3] ^= 1;
        assert_eq!(open(&file), Err(SnapshotFileError::ChecksumMismatch));
        // A well-formed file that is not synod's envelope.
        let mut foreign = vec![7u8; SECTOR];
        foreign.extend_from_slice(&Sha256::digest(&foreign));
        assert_eq!(open(&foreign), Err(SnapshotFileError::NotSynod));
    }
}
