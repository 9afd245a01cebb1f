//! Deterministic record contents for crash tests, the SIGKILL writer and the simulator.
//!
//! A record's type and payload are a pure function of its LSN, so a checker that reads the log
//! back can tell an intact record from an altered or invented one without keeping a copy of
//! what was written.

/// splitmix64 step: a tiny, well-mixed generator, also handy for seeded test schedules.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The record type and payload of the record at `lsn`: the LSN itself (8 bytes, little
/// endian) followed by 0 to `extra_bytes_max` pseudo-random bytes derived from it.
pub fn record_for_lsn(lsn: u64, extra_bytes_max: usize) -> (u8, Vec<u8>) {
    let mut state = lsn;
    let first = splitmix64(&mut state);
    let extra_bytes = (first % (extra_bytes_max as u64 + 1)) as usize;
    let mut payload = Vec::with_capacity(8 + extra_bytes);
    payload.extend_from_slice(&lsn.to_le_bytes());
    while payload.len() < 8 + extra_bytes {
        let word = splitmix64(&mut state).to_le_bytes();
        let take = (8 + extra_bytes - payload.len()).min(8);
        payload.extend_from_slice(&word[..take]);
    }
    ((first >> 56) as u8, payload)
}
