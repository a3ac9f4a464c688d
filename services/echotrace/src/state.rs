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
use echotrace_core::state::{self, PartitionSnapshot, PartitionStage, Position, Snapshot, SnapshotError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use xxhash_rust::xxh3::xxh3_64;

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

/// How a snapshot's temporary file ends.
const TEMPORARY_SUFFIX: &str = ".tmp";

/// A temporary file untouched this long was left by a process that died while writing it: a
/// snapshot takes seconds to write, even a full window's.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// How the temporary files of the snapshot at `path` begin: `.snapshot.bin.`.
fn temporary_prefix(path: &Path) -> String {
    format!(".{}.", path.file_name().unwrap_or_default().to_string_lossy())
}

/// Removes the temporary files of the snapshot at `path` that no process has touched for
/// [`ABANDONED_AFTER`]; what cannot be read or removed is left.
fn remove_abandoned(path: &Path) {
    let (Some(dir), prefix) = (path.parent(), temporary_prefix(path)) else { return };
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let abandoned = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > ABANDONED_AFTER));
        if name.starts_with(&prefix) && name.ends_with(TEMPORARY_SUFFIX) && abandoned {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(), "abandoned temporary snapshot removed"),
                Err(error) => {
                    tracing::warn!(file = %entry.path().display(), %error, "cannot remove an abandoned temporary snapshot")
                }
            }
        }
    }
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
        StateStore::open(config, "snapshot.bin", || fingerprint(config))
    }

    /// The store of the `link` stage's shard `stage.link_shard` (`state.dir/link-shard-<n>.bin`),
    /// whose fingerprint is the lexical configuration's and the shard's; none when snapshots are
    /// off.
    pub fn for_link_shard(config: &Config) -> Result<Option<StateStore>, SinkError> {
        let shard = format!("link shard {} of {}", config.stage.link_shard, config.detector.link_shards);
        StateStore::open(config, &format!("link-shard-{}.bin", config.stage.link_shard), || {
            state::linking_fingerprint(&config.detector, &shard)
        })
    }

    /// The store of owner of cascades `stage.score_owner` (`state.dir/score-owner-<n>.bin`), whose
    /// fingerprint names the owner and how many there are; none when snapshots are off.
    pub fn for_owner(config: &Config) -> Result<Option<StateStore>, SinkError> {
        let owner =
            format!("owner of cascades {} of {}", config.stage.score_owner, config.alerting.cascade_owners.max(1));
        StateStore::open(config, &format!("score-owner-{}.bin", config.stage.score_owner), || xxh3_64(owner.as_bytes()))
    }

    /// The store of the paging gate (`state.dir/gate.bin`), whose fingerprint names how many owners
    /// it waits for; none when snapshots are off.
    pub fn for_gate(config: &Config) -> Result<Option<StateStore>, SinkError> {
        let gate = format!("paging gate of {} owners", config.alerting.cascade_owners.max(1));
        StateStore::open(config, "gate.bin", || xxh3_64(gate.as_bytes()))
    }

    /// The store of the file `name` in `state.dir`, created if missing and rid of the temporary
    /// files its writers abandoned; none when snapshots are off.
    fn open(config: &Config, name: &str, fingerprint: impl FnOnce() -> u64) -> Result<Option<StateStore>, SinkError> {
        if config.state.dir.as_os_str().is_empty() {
            return Ok(None);
        }
        fs::create_dir_all(&config.state.dir).map_err(io_error(&config.state.dir))?;
        let path = config.state.dir.join(name);
        remove_abandoned(&path);
        Ok(Some(StateStore { path, fingerprint: fingerprint() }))
    }

    /// The snapshot file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes an encoded snapshot atomically (temporary file, fsync, rename, fsync of the folder).
    ///
    /// The temporary file has a name of its own (`.snapshot.bin.<random>.tmp`): processes that
    /// share a state folder (standbys on one claim, or processes splitting a topic by mistake) may
    /// write at the same moment, and with one shared name one's rename took the file the other
    /// was about to rename. Whichever renames last leaves its snapshot, whole. A temporary file
    /// is removed when its write fails; one left by a process that died while writing is removed
    /// by the next store opened on the folder ([`remove_abandoned`]).
    fn write_encoded(&self, bytes: &[u8]) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(&temporary_prefix(&self.path))
            .suffix(TEMPORARY_SUFFIX)
            .tempfile_in(dir)
            .map_err(io_error(dir))?;
        file.write_all(bytes).map_err(io_error(file.path()))?;
        file.as_file().sync_all().map_err(io_error(file.path()))?;
        file.persist(&self.path).map_err(|error| io_error(&self.path)(error.error))?;
        sync_dir(dir)?;
        Ok(())
    }

    /// Encodes a snapshot in memory and writes it atomically; returns its size in bytes.
    pub fn write(&self, detector: &Detector, scorer: &ScorerState, positions: &[Position]) -> Result<u64, StateError> {
        let bytes = state::encode(self.fingerprint, detector, scorer, positions)?;
        self.write_encoded(&bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Encodes the snapshot of a stage that reads one partition ([`PartitionStage`]) and writes it
    /// atomically; returns its size in bytes.
    pub fn write_partition<T: Serialize>(
        &self,
        stage: PartitionStage,
        snapshot: &PartitionSnapshot<T>,
    ) -> Result<u64, StateError> {
        let bytes = state::encode_partition(stage, self.fingerprint, snapshot)?;
        self.write_encoded(&bytes)?;
        Ok(bytes.len() as u64)
    }

    /// The snapshot of a stage that reads one partition to resume from, as [`StateStore::read`]
    /// reads a detector's.
    pub fn read_partition<T: DeserializeOwned>(
        &self,
        stage: PartitionStage,
    ) -> Result<Option<PartitionSnapshot<T>>, SnapshotError> {
        match fs::read(&self.path) {
            Ok(bytes) => state::read_partition(stage, &bytes, self.fingerprint).map(Some),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(SnapshotError::Io(error)),
        }
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
    let mut encoder = format!("{encoder}:{}x{}", embed.chunk_tokens, embed.max_chunks);
    if config.links_over_kafka() {
        // The window's shards are the `link` stage's, not in this snapshot.
        encoder.push_str(":link-stage");
    }
    state::linking_fingerprint(&config.detector, &encoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use echotrace_core::link::lexical_shard::LexicalShard;
    use echotrace_core::link::shard::LinkShard;
    use echotrace_core::score::owner::CascadeOwner;

    /// The linking shard's snapshot in `store`.
    fn read_shard(store: &StateStore) -> Result<Option<PartitionSnapshot<LexicalShard>>, SnapshotError> {
        store.read_partition(PartitionStage::LinkShard)
    }

    /// A configuration with snapshots in `dir`, for linking shard `shard` of 3.
    fn link_config(dir: &Path, shard: u32) -> Config {
        let mut config = Config::default();
        config.state.dir = dir.to_owned();
        config.stage.link_shard = shard;
        config.detector.link_shards = std::num::NonZeroU32::new(3).unwrap();
        config
    }

    #[test]
    fn processes_sharing_a_state_folder_write_at_once_and_leave_a_whole_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let config = link_config(dir.path(), 1);
        let position = |offset| Position { source: "echotrace.probes".into(), partition: 0, offset };
        let shard = LexicalShard::new(&config.detector, LinkShard::new(1, 3).unwrap());
        // Four writers of one store, as standbys on one claim: each write renames its own file.
        std::thread::scope(|scope| {
            for writer in 0..4 {
                let (config, shard) = (&config, &shard);
                scope.spawn(move || {
                    let store = StateStore::for_link_shard(config).unwrap().unwrap();
                    for round in 0..25 {
                        let snapshot = PartitionSnapshot { state: shard, position: position(writer * 100 + round) };
                        store.write_partition(PartitionStage::LinkShard, &snapshot).expect("every write succeeds");
                    }
                });
            }
        });
        let store = StateStore::for_link_shard(&config).unwrap().unwrap();
        let offset = read_shard(&store).unwrap().unwrap().position.offset;
        assert_eq!(offset % 100, 24, "one writer's last snapshot, whole");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, ["link-shard-1.bin"], "no temporary file left");
    }

    #[test]
    fn temporary_snapshots_abandoned_for_an_hour_are_removed_and_recent_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = link_config(dir.path(), 0);
        let (abandoned, writing) =
            (dir.path().join(".link-shard-0.bin.a1b2c3.tmp"), dir.path().join(".link-shard-0.bin.d4e5f6.tmp"));
        let another_stores = dir.path().join(".snapshot.bin.a1b2c3.tmp");
        for path in [&abandoned, &writing, &another_stores] {
            std::fs::write(path, b"partial").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        for path in [&abandoned, &another_stores] {
            std::fs::File::options().write(true).open(path).unwrap().set_modified(two_hours_ago).unwrap();
        }
        StateStore::for_link_shard(&config).unwrap().unwrap();
        assert!(!abandoned.exists(), "left by a process that died while writing");
        assert!(writing.exists(), "another process may be writing it now");
        assert!(another_stores.exists(), "the detector's store removes its own when it opens");
        StateStore::from_config(&config).unwrap().unwrap();
        assert!(!another_stores.exists());
    }

    #[test]
    fn an_owner_of_cascades_and_the_gate_come_back_from_their_own_snapshots_only() {
        let dir = tempfile::tempdir().unwrap();
        let owner_config = |owner: u32| {
            let mut config = Config::default();
            config.state.dir = dir.path().to_owned();
            config.stage.score_owner = owner;
            config.alerting.cascade_owners = 3;
            config
        };
        let store = StateStore::for_owner(&owner_config(1)).unwrap().unwrap();
        assert!(store.path().ends_with("score-owner-1.bin"));
        assert!(store.read_partition::<CascadeOwner>(PartitionStage::CascadeOwner).unwrap().is_none());
        let position = Position { source: "echotrace.owners".into(), partition: 1, offset: 7 };
        let snapshot = PartitionSnapshot { state: CascadeOwner::default(), position: position.clone() };
        store.write_partition(PartitionStage::CascadeOwner, &snapshot).unwrap();
        let read = store.read_partition::<CascadeOwner>(PartitionStage::CascadeOwner).unwrap().unwrap();
        assert_eq!(read.position, position);

        // Owner 2's store, or owner 1's of another number of owners, given owner 1's file: refused.
        let other = StateStore::for_owner(&owner_config(2)).unwrap().unwrap();
        std::fs::copy(store.path(), other.path()).unwrap();
        let refused = other.read_partition::<CascadeOwner>(PartitionStage::CascadeOwner);
        assert!(matches!(refused, Err(SnapshotError::Configuration { .. })));
        let mut four = owner_config(1);
        four.alerting.cascade_owners = 4;
        let refused =
            StateStore::for_owner(&four).unwrap().unwrap().read_partition::<CascadeOwner>(PartitionStage::CascadeOwner);
        assert!(matches!(refused, Err(SnapshotError::Configuration { .. })));
        // Nor is an owner's file the gate's, whatever its name.
        let gate = StateStore::for_gate(&owner_config(0)).unwrap().unwrap();
        assert!(gate.path().ends_with("gate.bin"));
        std::fs::copy(store.path(), gate.path()).unwrap();
        let refused = gate.read_partition::<CascadeOwner>(PartitionStage::PagingGate);
        assert!(matches!(refused, Err(SnapshotError::NotASnapshot)));
    }

    #[test]
    fn a_linking_shard_comes_back_from_its_snapshot_and_not_from_another_shards() {
        let dir = tempfile::tempdir().unwrap();
        let config = link_config(dir.path(), 1);
        let store = StateStore::for_link_shard(&config).unwrap().unwrap();
        assert!(read_shard(&store).unwrap().is_none(), "nothing written yet");
        let shard = LexicalShard::new(&config.detector, LinkShard::new(1, 3).unwrap());
        let position = Position { source: "echotrace.probes".into(), partition: 0, offset: 42 };
        store
            .write_partition(PartitionStage::LinkShard, &PartitionSnapshot { state: shard, position: position.clone() })
            .unwrap();
        assert_eq!(read_shard(&store).unwrap().unwrap().position, position);
        assert!(store.path().ends_with("link-shard-1.bin"));

        // Shard 2's store under the same folder, given shard 1's file: refused, not taken.
        let other = StateStore::for_link_shard(&link_config(dir.path(), 2)).unwrap().unwrap();
        std::fs::copy(store.path(), other.path()).unwrap();
        assert!(matches!(read_shard(&other), Err(SnapshotError::Configuration { .. })));
        // Nor is a shard's file a detector's snapshot.
        let detector = StateStore::from_config(&config).unwrap().unwrap();
        std::fs::copy(store.path(), detector.path()).unwrap();
        assert!(matches!(detector.read(), Err(SnapshotError::NotASnapshot)));
    }
}
