//! The instance's snapshot file: where `run` writes the detector and the scorer at checkpoints,
//! and what it resumes from at start-up (`state.dir/snapshot.bin`).
//!
//! A snapshot is encoded in memory ([`StateStore::write`]), then written to a hidden temporary
//! file, fsynced, renamed over the previous one and its folder fsynced, so the file is always a
//! whole snapshot, the last or the one before. The consumer runs both on a thread of its own, from a copy of the state
//! ([`crate::ingest::checkpoint`]). The
//! consumer commits the offsets a snapshot reflects only after it is in place
//! ([`crate::ingest`]): the committed offsets never run ahead of the state. A snapshot that cannot
//! be used (another format, another linking configuration, torn or corrupted) is refused with the
//! reason, and the instance starts with an empty window; it is never a crash.

use crate::config::Config;
use crate::embed::Encoder;
use crate::sinks::parquet::{SinkError, io_error, sync_dir};
use echotrace_core::detector::Detector;
use echotrace_core::score::alerts::ScorerState;
use echotrace_core::state::{self, Position, Snapshot, SnapshotError};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The folder or a file could not be written or synced.
    #[error(transparent)]
    Io(#[from] SinkError),
    /// Encoding the state failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// The snapshot file of one instance, and the fingerprint its state must match.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
    fingerprint: u64,
}

impl StateStore {
    /// The store `config.state` asks for; none when snapshots are off (`state.dir` empty).
    pub fn from_config(config: &Config) -> Result<Option<StateStore>, SinkError> {
        if config.state.dir.as_os_str().is_empty() {
            return Ok(None);
        }
        fs::create_dir_all(&config.state.dir).map_err(io_error(&config.state.dir))?;
        Ok(Some(StateStore { path: config.state.dir.join("snapshot.bin"), fingerprint: fingerprint(config) }))
    }

    /// The snapshot file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes an encoded snapshot atomically (temporary file, fsync, rename, fsync of the folder).
    fn write_encoded(&self, bytes: &[u8]) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let temporary = dir.join(".snapshot.bin.tmp");
        let mut file = fs::File::create(&temporary).map_err(io_error(&temporary))?;
        file.write_all(bytes).map_err(io_error(&temporary))?;
        file.sync_all().map_err(io_error(&temporary))?;
        drop(file);
        fs::rename(&temporary, &self.path).map_err(io_error(&self.path))?;
        sync_dir(dir)?;
        Ok(())
    }

    /// Encodes a snapshot in memory and writes it atomically; returns its size in bytes.
    pub fn write(&self, detector: &Detector, scorer: &ScorerState, positions: &[Position]) -> Result<u64, StateError> {
        let bytes = state::encode(self.fingerprint, detector, scorer, positions)?;
        self.write_encoded(&bytes)?;
        Ok(bytes.len() as u64)
    }

    /// The snapshot to resume from: none when there is no file yet; an error that says why when
    /// there is one that cannot be used.
    pub fn read(&self) -> Result<Option<Snapshot>, SnapshotError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(SnapshotError::Io(error)),
        };
        state::read(&bytes, self.fingerprint).map(Some)
    }
}

/// The linking configuration's fingerprint: the detector's settings and the encoder that embeds
/// (which model, how texts are cut into chunks).
pub fn fingerprint(config: &Config) -> u64 {
    let embed = &config.embed;
    let encoder = match embed.encoder {
        Encoder::Transformer => format!("transformer:{}", embed.model_file),
        Encoder::Static => format!("static:{}", embed.static_dir.display()),
    };
    let encoder = format!("{encoder}:{}x{}", embed.chunk_tokens, embed.max_chunks);
    state::linking_fingerprint(&config.detector, &encoder)
}
