//! Snapshots of the detector and the scorer: everything that decides what is linked and alerted,
//! with the input positions it reflects, as one file that a restarted process resumes from.
//!
//! A snapshot is the [`Detector`] (its indexes, graph, semantic window, watermark and counters),
//! the [`ScorerState`] (cascade activity, alert phases, recent authors, the circuit breaker) and the
//! [`Position`]s of the input after the last post they reflect. Processing is deterministic on
//! event time, so a process that restores a snapshot and then reads the input from those positions
//! links and alerts exactly as the process that wrote it would have.
//!
//! The file:
//!
//! ```text
//! magic "ETSTATE\0" | format u32 | fingerprint u64 | payload (postcard) | payload length u64 | xxh3-64 of payload u64
//! ```
//!
//! all little-endian. [`SNAPSHOT_FORMAT`] changes with any change to what the payload holds, and
//! the fingerprint is the linking configuration's ([`linking_fingerprint`]): a snapshot of another
//! format or written under another linking configuration is refused, as is one whose checksum or
//! length does not match (a torn or corrupted file), each with a [`SnapshotError`] that says which;
//! decoding never panics on bad bytes. The payload is postcard, serde's compact binary format,
//! whose wire format is specified apart from the crate.

use crate::detector::{Detector, DetectorConfig};
use crate::score::alerts::ScorerState;
use serde::{Deserialize, Serialize};
use std::io::Write;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The version of what a snapshot's payload holds.
pub const SNAPSHOT_FORMAT: u32 = 4;

const MAGIC: &[u8; 8] = b"ETSTATE\0";
const HEADER_LEN: usize = 8 + 4 + 8;
const TRAILER_LEN: usize = 8 + 8;

/// Where the input stands after the last post a snapshot reflects: the next offset to read of
/// one partition of one source (a Kafka topic).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The topic (or other source).
    pub source: String,
    /// Its partition.
    pub partition: i32,
    /// The next offset to read.
    pub offset: i64,
}

/// A decoded snapshot.
#[derive(Deserialize)]
pub struct Snapshot {
    /// The detector as it was.
    pub detector: Detector,
    /// The scorer's state as it was.
    pub scorer: ScorerState,
    /// Where the input stood.
    pub positions: Vec<Position>,
}

/// What a snapshot is written from: borrowed, so writing copies nothing but the bytes.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    detector: &'a Detector,
    scorer: &'a ScorerState,
    positions: &'a [Position],
}

/// Why a snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file does not start like a snapshot.
    #[error("not an echotrace state snapshot (no ETSTATE header)")]
    NotASnapshot,
    /// It was written by a build with another payload format.
    #[error("snapshot format {found}, this build reads format {expected}")]
    Format {
        /// The file's.
        found: u32,
        /// This build's.
        expected: u32,
    },
    /// It was written under another linking configuration.
    #[error(
        "snapshot written under another linking configuration (fingerprint {found:016x}, now {expected:016x}): \
         its links would not be this configuration's"
    )]
    Configuration {
        /// The file's.
        found: u64,
        /// The configuration's now.
        expected: u64,
    },
    /// The file is shorter or longer than its trailer says, or its checksum does not match.
    #[error("snapshot is torn or corrupted: {0}")]
    Corrupt(String),
    /// The payload does not decode.
    #[error("snapshot payload does not decode: {0}")]
    Decode(String),
    /// The state does not encode (a bug: every state type serializes).
    #[error("cannot encode the state: {0}")]
    Encode(String),
    /// Writing failed.
    #[error("cannot write the snapshot: {0}")]
    Io(#[from] std::io::Error),
}

/// The fingerprint of what decides links: the detector's configuration and the encoder (name and
/// model file) its embeddings come from. Two configurations with the same fingerprint link alike.
pub fn linking_fingerprint(config: &DetectorConfig, encoder: &str) -> u64 {
    let config = serde_json::to_string(config).expect("the detector configuration serializes");
    xxh3_64(format!("{config}\u{1f}{encoder}").as_bytes())
}

/// A writer that hashes and counts what passes through it, and keeps the first error (postcard
/// reports a failed write as its own error kind).
struct Hashing<W> {
    inner: W,
    hasher: Xxh3,
    written: u64,
    failed: Option<std::io::Error>,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = match self.inner.write(bytes) {
            Ok(n) => n,
            Err(error) => {
                let reported = std::io::Error::new(error.kind(), error.to_string());
                self.failed.get_or_insert(error);
                return Err(reported);
            }
        };
        self.hasher.update(&bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot of `detector` and `scorer` at `positions` to `out` (a buffered file, say);
/// returns the bytes written.
pub fn write(
    out: impl Write,
    fingerprint: u64,
    detector: &Detector,
    scorer: &ScorerState,
    positions: &[Position],
) -> Result<u64, SnapshotError> {
    let mut out = Hashing { inner: out, hasher: Xxh3::new(), written: 0, failed: None };
    out.inner.write_all(MAGIC)?;
    out.inner.write_all(&SNAPSHOT_FORMAT.to_le_bytes())?;
    out.inner.write_all(&fingerprint.to_le_bytes())?;
    let value = SnapshotRef { detector, scorer, positions };
    if let Err(error) = postcard::to_io(&value, &mut out) {
        return Err(match out.failed.take() {
            Some(io) => SnapshotError::Io(io),
            None => SnapshotError::Encode(error.to_string()),
        });
    }
    let (length, checksum) = (out.written, out.hasher.digest());
    out.inner.write_all(&length.to_le_bytes())?;
    out.inner.write_all(&checksum.to_le_bytes())?;
    out.inner.flush()?;
    Ok((HEADER_LEN + TRAILER_LEN) as u64 + length)
}

/// Reads a snapshot, refusing it unless its format and fingerprint are this build's and
/// `fingerprint`, and its bytes are whole.
pub fn read(bytes: &[u8], fingerprint: u64) -> Result<Snapshot, SnapshotError> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN || &bytes[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != SNAPSHOT_FORMAT {
        return Err(SnapshotError::Format { found: format, expected: SNAPSHOT_FORMAT });
    }
    let found = word(12);
    if found != fingerprint {
        return Err(SnapshotError::Configuration { found, expected: fingerprint });
    }
    let trailer = bytes.len() - TRAILER_LEN;
    let (length, checksum) = (word(trailer), word(trailer + 8));
    let payload = &bytes[HEADER_LEN..trailer];
    if payload.len() as u64 != length {
        return Err(SnapshotError::Corrupt(format!("{} payload bytes, the trailer says {length}", payload.len())));
    }
    if xxh3_64(payload) != checksum {
        return Err(SnapshotError::Corrupt("the payload's checksum does not match".into()));
    }
    postcard::from_bytes(payload).map_err(|error| SnapshotError::Decode(error.to_string()))
}
