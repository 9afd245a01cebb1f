//! Byte layout of WAL segments: the segment header and the record frame.
//!
//! ```text
//! segment  = header record* zero-fill
//! header   = "SYNODWAL" version:u32 first_lsn:u64 crc:u32          (24 bytes, little endian)
//! record   = len:u32 crc:u32 type:u8 payload                       (len = 1 + payload bytes)
//! crc      = crc32c(first_lsn ‖ len ‖ type ‖ payload)
//! ```
//!
//! A length of zero cannot be a record (every record has a type byte), so the zeros that
//! preallocation leaves after the last record read as "end". The checksum covers the length,
//! so a torn or flipped length is caught, and it is seeded with the segment's first LSN, so a
//! record copied from another segment (or another log) never validates where it does not
//! belong.

/// Bytes of the header at the start of every segment.
pub const SEGMENT_HEADER_BYTES: u64 = 24;

/// Bytes a record adds to its payload on disk: length, checksum and type.
pub const RECORD_OVERHEAD_BYTES: usize = 9;

/// Bytes of the length and checksum fields that precede a record's type byte.
const FRAME_PREFIX_BYTES: usize = 8;

const SEGMENT_MAGIC: [u8; 8] = *b"SYNODWAL";
const SEGMENT_VERSION: u32 = 1;

/// The header of a segment whose first record has `first_lsn`.
pub(crate) fn segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Check a segment header; on failure, the offset of the bad field and why.
pub(crate) fn check_segment_header(bytes: &[u8], first_lsn: u64) -> Result<(), (u64, String)> {
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        return Err((
            bytes.len() as u64,
            format!(
                "file of {} bytes is shorter than the {SEGMENT_HEADER_BYTES}-byte segment header",
                bytes.len()
            ),
        ));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err((0, "bad magic, not a synod WAL segment".to_owned()));
    }
    let crc = read_u32(bytes, 20);
    if crc32c::crc32c(&bytes[0..20]) != crc {
        return Err((
            0,
            format!("segment header (bytes 0..{SEGMENT_HEADER_BYTES}) checksum mismatch"),
        ));
    }
    let version = read_u32(bytes, 8);
    if version != SEGMENT_VERSION {
        return Err((8, format!("unsupported segment version {version}")));
    }
    let header_lsn = read_u64(bytes, 12);
    if header_lsn != first_lsn {
        return Err((
            12,
            format!("header says first LSN {header_lsn}, file name says {first_lsn}"),
        ));
    }
    Ok(())
}

/// Append the frame of one record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, seed: u64, record_type: u8, payload: &[u8]) {
    let len_field = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    debug_assert_eq!(
        len_field as usize,
        payload.len() + 1,
        "payload bound not checked"
    );
    let start = out.len();
    out.extend_from_slice(&len_field.to_le_bytes());
    out.extend_from_slice(&frame_crc(seed, len_field, record_type, payload).to_le_bytes());
    out.push(record_type);
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - start, RECORD_OVERHEAD_BYTES + payload.len());
}

/// What lies at some offset of a segment.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// An intact record, ending at byte `end`.
    Record {
        record_type: u8,
        payload: &'a [u8],
        end: usize,
    },
    /// Zeros: nothing was ever written here.
    End,
    /// Neither an intact record nor zeros, and why.
    Bad(String),
}

/// Decode the frame at `offset` of a segment's bytes. The length is bounded only by the
/// file, not by the configured payload limit, so a log written with a larger limit is still
/// read back whole.
pub(crate) fn decode_record(bytes: &[u8], offset: usize, seed: u64) -> Frame<'_> {
    let rest = &bytes[offset.min(bytes.len())..];
    if rest.len() < FRAME_PREFIX_BYTES {
        return if rest.iter().all(|b| *b == 0) {
            Frame::End
        } else {
            Frame::Bad("record header cut short by the end of the file".to_owned())
        };
    }
    let len_field = read_u32(rest, 0);
    let crc = read_u32(rest, 4);
    if len_field == 0 {
        return if crc == 0 {
            Frame::End
        } else {
            Frame::Bad("zero record length with a non-zero checksum".to_owned())
        };
    }
    let end = FRAME_PREFIX_BYTES + len_field as usize;
    if end > rest.len() {
        return Frame::Bad(format!(
            "record of {len_field} bytes runs past the end of the file"
        ));
    }
    let record_type = rest[FRAME_PREFIX_BYTES];
    let payload = &rest[FRAME_PREFIX_BYTES + 1..end];
    if frame_crc(seed, len_field, record_type, payload) != crc {
        return Frame::Bad("record checksum mismatch".to_owned());
    }
    debug_assert_eq!(payload.len() + 1, len_field as usize);
    Frame::Record {
        record_type,
        payload,
        end: offset + end,
    }
}

/// The first offset in `from..to` where an intact record starts, if any. Used to tell a torn
/// tail (garbage only) from mid-log corruption (garbage followed by records).
pub(crate) fn find_record(bytes: &[u8], from: usize, to: usize, seed: u64) -> Option<usize> {
    (from..to.min(bytes.len()))
        .find(|offset| matches!(decode_record(bytes, *offset, seed), Frame::Record { .. }))
}

fn frame_crc(seed: u64, len_field: u32, record_type: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&seed.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &len_field.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &[record_type]);
    crc32c::crc32c_append(crc, payload)
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_every_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 7, 3, b"hello");
        assert!(matches!(
            decode_record(&bytes, 0, 7),
            Frame::Record {
                record_type: 3,
                payload: b"hello",
                end: 14
            }
        ));
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&damaged, 0, 7), Frame::Record { .. }),
                "bit {bit} flipped unnoticed"
            );
        }
        // The same bytes do not validate in a segment with another first LSN.
        assert!(matches!(decode_record(&bytes, 0, 8), Frame::Bad(_)));
    }

    #[test]
    fn zeros_read_as_end() {
        assert!(matches!(decode_record(&[0; 20], 0, 1), Frame::End));
        assert!(matches!(decode_record(&[0; 3], 0, 1), Frame::End));
        assert!(matches!(decode_record(&[], 0, 1), Frame::End));
    }

    #[test]
    fn header_checks_name_the_field() {
        let header = segment_header(42);
        assert_eq!(check_segment_header(&header, 42), Ok(()));
        assert_eq!(check_segment_header(&header, 41).map_err(|e| e.0), Err(12));
        let mut bad = header;
        bad[13] ^= 1;
        assert_eq!(check_segment_header(&bad, 42).map_err(|e| e.0), Err(0));
    }
}
