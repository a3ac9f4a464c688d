//! The snapshot decoder: any payload inside a well-formed envelope (magic, format, fingerprint,
//! length and checksum all right, so the decoder itself is reached) gives a state or a reason,
//! never a panic; and so do the raw bytes.
#![no_main]

use echotrace_core::state::{SNAPSHOT_FORMAT, read};
use libfuzzer_sys::fuzz_target;

const FINGERPRINT: u64 = 7;

fuzz_target!(|payload: &[u8]| {
    let _ = read(payload, FINGERPRINT);
    let mut file = b"ETSTATE\0".to_vec();
    file.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    file.extend_from_slice(&FINGERPRINT.to_le_bytes());
    file.extend_from_slice(payload);
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    let _ = read(&file, FINGERPRINT);
});
