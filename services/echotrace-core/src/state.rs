//! Snapshots of the detector and the scorer: everything that decides what is linked and alerted,
//! with the input positions it reflects, as one file that a restarted process resumes from.
//!
//! A snapshot is the [`Detector`] (its indexes, graph, semantic window, watermark and counters),
//! the [`ScorerState`] (cascade activity, alert phases, recent authors, the circuit breaker) and the
//! [`Position`]s of the input after the last post they reflect. Processing is deterministic on
//! event time, so a process that restores a snapshot and then reads the input from those positions
//! links and alerts exactly as the process that wrote it would have.
//!
//! A stage of the staged deployment that reads one partition (a linking shard, an owner of
//! cascades, the paging gate) is snapshotted alone ([`PartitionSnapshot`]: its state and the
//! partition's position), in the same frame under a magic of its kind ([`PartitionStage`]).
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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// The version of what a snapshot's payload holds.
pub const SNAPSHOT_FORMAT: u32 = 14;

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
    #[error("not an echotrace state snapshot of this kind (not its ETSTATE, ETSHARD, ETOWNER or ETGATE header)")]
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
    /// The file could not be read.
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] std::io::Error),
}

/// The fingerprint of what decides links: the detector's configuration and the encoder (name and
/// model file) its embeddings come from. Two configurations with the same fingerprint link alike.
pub fn linking_fingerprint(config: &DetectorConfig, encoder: &str) -> u64 {
    let config = serde_json::to_string(config).expect("the detector configuration serializes");
    xxh3_64(format!("{config}\u{1f}{encoder}").as_bytes())
}

/// Encodes a snapshot of `detector` and `scorer` at `positions`: the whole file's bytes.
pub fn encode(
    fingerprint: u64,
    detector: &Detector,
    scorer: &ScorerState,
    positions: &[Position],
) -> Result<Vec<u8>, SnapshotError> {
    frame(MAGIC, fingerprint, &SnapshotRef { detector, scorer, positions })
}

/// Reads a snapshot, refusing it unless its format and fingerprint are this build's and
/// `fingerprint`, and its bytes are whole.
pub fn read(bytes: &[u8], fingerprint: u64) -> Result<Snapshot, SnapshotError> {
    unframe(MAGIC, bytes, fingerprint)
}

/// The stages whose processes read one partition in order and snapshot what they hold with where
/// that partition stood ([`PartitionSnapshot`]); each kind's files begin with a magic of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionStage {
    /// A linking shard ([`crate::link::lexical_shard::LexicalShard`]) on the probe partition.
    LinkShard,
    /// An owner of cascades ([`crate::score::owner::CascadeOwner`]).
    CascadeOwner,
    /// The paging gate ([`crate::score::gate::PageGate`]).
    PagingGate,
}

impl PartitionStage {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            PartitionStage::LinkShard => b"ETSHARD\0",
            PartitionStage::CascadeOwner => b"ETOWNER\0",
            PartitionStage::PagingGate => b"ETGATE\0\0",
        }
    }
}

/// The snapshot of a stage process that reads one partition: its state, and the next offset of
/// that partition after the last message the state reflects.
#[derive(Clone, Serialize, Deserialize)]
pub struct PartitionSnapshot<T> {
    /// The state as it was.
    pub state: T,
    /// Where the partition stood.
    pub position: Position,
}

/// Encodes a [`PartitionSnapshot`] of `stage`, framed as a detector's is under the stage's magic.
pub fn encode_partition<T: Serialize>(
    stage: PartitionStage,
    fingerprint: u64,
    snapshot: &PartitionSnapshot<T>,
) -> Result<Vec<u8>, SnapshotError> {
    frame(stage.magic(), fingerprint, snapshot)
}

/// Reads a [`PartitionSnapshot`] of `stage`, refused where [`read`] would refuse a detector's.
pub fn read_partition<T: DeserializeOwned>(
    stage: PartitionStage,
    bytes: &[u8],
    fingerprint: u64,
) -> Result<PartitionSnapshot<T>, SnapshotError> {
    unframe(stage.magic(), bytes, fingerprint)
}

/// The file of a snapshot holding `value`: header, payload, trailer.
///
/// Encoded into memory in one pass, then hashed in one call: streaming postcard's many small
/// writes through a hashing writer ran at about 100 MB/s, and the encoding is what a checkpoint
/// pauses consumption for.
fn frame(magic: &[u8; 8], fingerprint: u64, value: &impl Serialize) -> Result<Vec<u8>, SnapshotError> {
    let mut file = Vec::with_capacity(1 << 20);
    file.extend_from_slice(magic);
    file.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    file.extend_from_slice(&fingerprint.to_le_bytes());
    let mut bytes = postcard::to_extend(value, file).map_err(|error| SnapshotError::Encode(error.to_string()))?;
    let payload = &bytes[HEADER_LEN..];
    let (length, checksum) = (payload.len() as u64, xxh3_64(payload));
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&checksum.to_le_bytes());
    Ok(bytes)
}

/// The value a snapshot file framed under `magic` holds, refused unless its format and
/// fingerprint are this build's and `fingerprint`, and its bytes are whole.
fn unframe<T: DeserializeOwned>(magic: &[u8; 8], bytes: &[u8], fingerprint: u64) -> Result<T, SnapshotError> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN || &bytes[..8] != magic {
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
