//! `echotrace compact`: merges the small files of closed event-hour partitions into one file each.
//!
//! The sink writes one file per dataset and partition at every checkpoint (every 5 s by default), so
//! rows are queryable within seconds; an hour then holds hundreds of small files. Once an hour is
//! closed (its end is `min_age` behind the wall clock), compaction rewrites its files as one:
//!
//! - **sorted** by the column lookups filter on (`cascade_id` for posts, edges and alerts), so the
//!   row groups of a cascade are few and skipped by their statistics, and with bloom filters sized to
//!   its row groups;
//! - **without duplicates**: the rows an at-least-once redelivery wrote twice (a post id, an edge, an
//!   alert event) are kept once (the first ingested), and of a cascade's rows only the newest in the
//!   hour is kept (the current state is the newest row, `schemas/README.md`).
//!
//! DataFusion does the sorting under a memory limit, spilling to disk, so an hour of any size fits.
//!
//! Safety: the new file is written under a hidden name, fsynced and renamed into place, and only then
//! are its inputs removed. Its metadata lists them (`echotrace.compacted_from`): a run interrupted
//! between the rename and the removals is finished by the next run before anything else. Files a
//! live consumer writes into the partition meanwhile (late posts) are not inputs and stay, for the
//! next run. One compaction runs at a time per directory (a lock file). A reader that lists the
//! partition between the rename and the removals can count rows twice, and one that listed it just
//! before can fail to open a removed file (and is retried): schedule compaction for closed hours,
//! which analysts rarely query at that moment.

use crate::sinks::parquet::{DATASETS, dataset_schema, io_error, sync_dir, writer_id, writer_properties};
use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The metadata key of a compacted file that lists the files it replaced (a JSON array of names).
pub const COMPACTED_FROM_KEY: &str = "echotrace.compacted_from";

/// Rows per row group of a compacted file: small enough that a cascade's lookup reads little, large
/// enough that the footers stay small.
pub const COMPACTED_ROW_GROUP_ROWS: usize = 64 * 1024;

/// How compaction runs.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// A partition is compacted once its hour ended at least this long ago (wall clock).
    pub min_age: Duration,
    /// The memory DataFusion may use before it spills sorts to disk.
    pub memory_limit_bytes: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions { min_age: Duration::hours(1), memory_limit_bytes: 1 << 30 }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactSummary {
    /// Partitions rewritten.
    pub partitions: usize,
    /// Files merged away.
    pub files_in: usize,
    /// Rows the new files hold.
    pub rows_out: usize,
    /// Input files of an interrupted earlier run, removed first.
    pub leftovers_removed: usize,
}

/// Compacts every closed partition of every dataset under `data_dir`, as of `now`.
pub async fn compact(data_dir: &Path, options: &CompactOptions, now: DateTime<Utc>) -> anyhow::Result<CompactSummary> {
    let lock_path = data_dir.join(".compact.lock");
    let lock = File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another `echotrace compact` holds {}; run one at a time per directory", lock_path.display())
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    }
    let mut summary = CompactSummary::default();
    for dataset in DATASETS {
        for (partition, hour_end) in partitions(&data_dir.join(dataset))? {
            summary.leftovers_removed += finish_interrupted(&partition)?;
            if hour_end + options.min_age > now {
                continue;
            }
            let inputs = data_files(&partition)?;
            if inputs.len() < 2 {
                continue;
            }
            let rows = merge(dataset, &partition, &inputs, options)
                .await
                .with_context(|| format!("cannot compact {}", partition.display()))?;
            summary.partitions += 1;
            summary.files_in += inputs.len();
            summary.rows_out += rows;
        }
    }
    Ok(summary)
}

/// The `date=…/hour=…` folders of a dataset, with the end of each hour.
fn partitions(dataset_dir: &Path) -> anyhow::Result<Vec<(PathBuf, DateTime<Utc>)>> {
    let mut found = Vec::new();
    let Ok(dates) = fs::read_dir(dataset_dir) else { return Ok(found) };
    for date in dates.flatten() {
        let name = date.file_name().to_string_lossy().into_owned();
        let Some(day) = name.strip_prefix("date=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) else {
            continue;
        };
        for hour in fs::read_dir(date.path())?.flatten() {
            let name = hour.file_name().to_string_lossy().into_owned();
            let Some(hour_of_day) = name.strip_prefix("hour=").and_then(|h| h.parse::<u32>().ok()) else { continue };
            let Some(start) = day.and_hms_opt(hour_of_day, 0, 0) else { continue };
            found.push((hour.path(), start.and_utc() + Duration::hours(1)));
        }
    }
    found.sort();
    Ok(found)
}

/// The visible Parquet files of a partition, by name.
fn data_files(partition: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(partition)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with('.') && name.ends_with(".parquet")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Removes what an interrupted run left: inputs of a compacted file that are still there, and its
/// hidden temporary files. Returns the number of inputs removed.
fn finish_interrupted(partition: &Path) -> anyhow::Result<usize> {
    let mut removed = 0;
    for path in fs::read_dir(partition)?.flatten().map(|e| e.path()) {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with(".compacted-") && name.ends_with(".tmp") {
            fs::remove_file(&path)?;
        } else if name.starts_with("compacted-") && name.ends_with(".parquet") {
            for input in compacted_from(&path)? {
                let input = partition.join(input);
                if input.exists() {
                    fs::remove_file(&input)?;
                    removed += 1;
                }
            }
        }
    }
    if removed > 0 {
        sync_dir(partition)?;
    }
    Ok(removed)
}

/// The names a compacted file replaced, from its metadata.
fn compacted_from(path: &Path) -> anyhow::Result<Vec<String>> {
    let reader = SerializedFileReader::new(File::open(path)?).with_context(|| format!("reading {}", path.display()))?;
    let names = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == COMPACTED_FROM_KEY).and_then(|kv| kv.value.clone()));
    let names: Vec<String> = match names {
        Some(json) => {
            serde_json::from_str(&json).with_context(|| format!("{COMPACTED_FROM_KEY} of {}", path.display()))?
        }
        None => Vec::new(),
    };
    // Only plain names in the same folder: never follow a path out of the partition.
    Ok(names.into_iter().filter(|n| !n.contains('/') && !n.starts_with('.')).collect())
}

/// The statement that rewrites a dataset's rows: duplicates dropped, sorted for lookups.
fn rewrite_sql(dataset: &str) -> String {
    let columns: Vec<String> = dataset_schema(dataset).fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
    let columns = columns.join(", ");
    let (key, keep_first, order) = match dataset {
        "posts" => ("post_id", "ingested_at", "cascade_id, created_at, post_id"),
        "edges" => ("child_id, parent_id, kind", "created_at", "cascade_id, created_at, child_id"),
        "cascades" => ("cascade_id", "updated_at DESC", "cascade_id"),
        "cascade_merges" => ("absorbed_cascade_id, into_cascade_id, bridging_post_id", "merged_at", "into_cascade_id"),
        "reviews" => ("review_id", "reviewed_at", "reviewed_at, review_id"),
        _ => ("alert_id, state, event_time", "emitted_at", "cascade_id, event_time, alert_id"),
    };
    format!(
        "SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY {keep_first}) AS echotrace_copy \
         FROM input) WHERE echotrace_copy = 1 ORDER BY {order}"
    )
}

/// Merges `inputs` into one compacted file in `partition`, then removes them; returns its rows.
async fn merge(
    dataset: &'static str,
    partition: &Path,
    inputs: &[PathBuf],
    options: &CompactOptions,
) -> anyhow::Result<usize> {
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(options.memory_limit_bytes, 1.0).build_arc()?;
    let context = SessionContext::new_with_config_rt(SessionConfig::new().with_target_partitions(2), runtime);
    let urls = inputs
        .iter()
        .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let listing = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(listing)
        .with_schema(dataset_schema(dataset));
    context.register_table("input", Arc::new(ListingTable::try_new(config)?))?;
    let mut stream = context.sql(&rewrite_sql(dataset)).await?.execute_stream().await?;

    let names: Vec<String> =
        inputs.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    let name = format!("compacted-{}-{}.parquet", Utc::now().timestamp_millis(), writer_id());
    let tmp = partition.join(format!(".{name}.tmp"));
    let done = partition.join(&name);
    let properties = writer_properties(
        dataset,
        COMPACTED_ROW_GROUP_ROWS,
        Some(COMPACTED_ROW_GROUP_ROWS),
        vec![KeyValue::new(COMPACTED_FROM_KEY.to_owned(), serde_json::to_string(&names)?)],
    );
    // The writer takes the schema of the statement's batches: the dataset's columns, in order, with
    // the types the reader gave them.
    let mut writer: Option<ArrowWriter<File>> = None;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if writer.is_none() {
            let file = File::create(&tmp).map_err(io_error(&tmp))?;
            writer = Some(ArrowWriter::try_new(file, batch.schema(), Some(properties.clone()))?);
        }
        writer.as_mut().expect("created above").write(&batch)?;
    }
    let writer = match writer {
        Some(writer) => writer,
        None => ArrowWriter::try_new(
            File::create(&tmp).map_err(io_error(&tmp))?,
            dataset_schema(dataset),
            Some(properties),
        )?,
    };
    let file = writer.into_inner()?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, &done).map_err(io_error(&done))?;
    sync_dir(partition)?;
    for input in inputs {
        fs::remove_file(input).map_err(io_error(input))?;
    }
    sync_dir(partition)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_know_when_their_hour_ends() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("date=2026-11-01/hour=23")).unwrap();
        fs::create_dir_all(dir.path().join("date=2026-11-01/hour=09")).unwrap();
        fs::create_dir_all(dir.path().join("not-a-partition")).unwrap();
        let found = partitions(dir.path()).unwrap();
        let ends: Vec<String> = found.iter().map(|(_, end)| end.to_rfc3339()).collect();
        assert_eq!(ends, ["2026-11-01T10:00:00+00:00", "2026-11-02T00:00:00+00:00"]);
    }

    #[test]
    fn rewrite_keeps_the_first_copy_and_sorts_for_lookups() {
        let sql = rewrite_sql("posts");
        assert!(sql.contains("PARTITION BY post_id ORDER BY ingested_at"), "{sql}");
        assert!(sql.ends_with("ORDER BY cascade_id, created_at, post_id"), "{sql}");
        assert!(rewrite_sql("cascades").contains("ORDER BY updated_at DESC"), "the newest cascade row is kept");
    }
}
