//! `echotrace query`: SQL over the stored datasets, with Apache DataFusion.
//!
//! [`session`] registers the tables `posts`, `edges`, `cascades`, `cascade_merges`, `alerts` and `reviews` over
//! the Parquet datasets of an output directory of `run`, `demo` or `replay`, the analysts'
//! functions in [`udfs`] and the table function [`lineage`]. [`output`] renders results as a table, CSV, JSON or a Parquet file.
//! [`flight`] serves the same tables to Arrow Flight SQL clients (`echotrace serve-sql`).
//!
//! Each table is a listing table over its dataset's event-hour partitions, with the partition
//! columns `date` (`YYYY-MM-DD`) and `hour` (`HH`), both strings: a filter on them skips whole
//! folders, and a filter on a time column skips row groups by their statistics. The table schema is
//! the one this build writes ([`dataset_schema`]), so files written before a column was added read
//! it as null, and a dataset with no file yet is an empty table that still parses every query.
//!
//! Freshness: rows become queryable when they are durable, at each checkpoint
//! (`output.flush_interval_ms`, 5 s by default), as small files that `echotrace compact` later
//! merges. Nothing is served from a running consumer's memory: readers and writers share only files,
//! which is what lets them run on different machines over object storage.

pub mod flight;
pub mod lineage;
pub mod output;
pub mod prompt;
pub mod udfs;

use crate::sinks::parquet::{DATASETS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, dataset_schema};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use std::path::{Path, PathBuf};

/// The tables, in the order they are registered: one per dataset.
pub const TABLES: [&str; 6] = DATASETS;

/// The partition columns every table has, from the folder names.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "hour"];

/// Why a query could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The data directory does not exist or holds no dataset.
    #[error(
        "{0} is not an echotrace output directory (no posts/, edges/, cascades/ …): run `echotrace replay` or `demo` first, or pass --data"
    )]
    NoData(String),
    /// DataFusion refused or failed the query; its message says where (line and column for SQL).
    /// Not a `source`: DataFusion's message already holds its causes, and printing the chain again
    /// would repeat them.
    #[error("{0}")]
    DataFusion(DataFusionError),
    /// A dataset holds files this build cannot read as its tables.
    #[error("{path}: {reason}")]
    Layout {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        QueryError::DataFusion(error)
    }
}

/// A session with every table and function registered over `data_dir`.
pub async fn session(data_dir: &Path) -> Result<SessionContext, QueryError> {
    let context = SessionContext::new();
    register(&context, data_dir).await?;
    Ok(context)
}

/// Registers every table and function over `data_dir` in `context`: what [`session`] does, for a
/// context with its own configuration or runtime ([`flight`] shares one runtime across queries).
pub async fn register(context: &SessionContext, data_dir: &Path) -> Result<(), QueryError> {
    if !TABLES.iter().any(|t| data_dir.join(t).is_dir()) {
        return Err(QueryError::NoData(data_dir.display().to_string()));
    }
    for table in TABLES {
        let dir = data_dir.join(table);
        check_layout(&dir)?;
        let schema = table_schema(table);
        let partitions = PARTITION_COLUMNS.iter().map(|c| (c.to_string(), DataType::Utf8)).collect();
        let options = ParquetReadOptions::default().table_partition_cols(partitions).schema(&schema);
        if dir.is_dir() {
            context.register_parquet(table, &format!("{}/", dir.display()), options).await?;
        } else {
            let empty = datafusion::catalog::MemTable::try_new(schema_with_partitions(&schema).into(), vec![vec![]])?;
            context.register_table(table, std::sync::Arc::new(empty))?;
        }
    }
    udfs::register(context);
    context.register_udtf("lineage", std::sync::Arc::new(lineage::LineageFunction));
    Ok(())
}

/// Runs one SQL statement and collects its result.
pub async fn run(context: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    Ok(context.sql(sql).await?.collect().await?)
}

/// The schema a table is read with: the dataset's, strings as views (what DataFusion computes on
/// fastest; Flight SQL casts them back to `Utf8` for its clients).
pub(crate) fn table_schema(table: &str) -> Schema {
    let fields: Vec<Field> = dataset_schema(table)
        .fields()
        .iter()
        .map(|f| {
            if f.data_type() == &DataType::Utf8 {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Schema::new(fields)
}

fn schema_with_partitions(schema: &Schema) -> Schema {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(PARTITION_COLUMNS.iter().map(|c| Field::new(*c, DataType::Utf8, false)));
    Schema::new(fields)
}

/// Refuses what would otherwise be skipped or misread: files of the flat layout (schema version 1,
/// which partitioned readers would silently leave out) and files of a newer schema version.
fn check_layout(dir: &Path) -> Result<(), QueryError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let mut newest_partition: Option<PathBuf> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if is_data_file(&path) {
            return Err(QueryError::Layout {
                path,
                reason: "a file of the flat layout (schema version 1) outside date=/hour= partitions; \
                         replay the input again into a new directory, or move each file into the partition \
                         of its rows' hour"
                    .into(),
            });
        }
        if path.is_dir() && newest_partition.as_ref().is_none_or(|newest| path > *newest) {
            newest_partition = Some(path);
        }
    }
    let Some(date) = newest_partition else { return Ok(()) };
    let newest_file = std::fs::read_dir(&date)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|hour| std::fs::read_dir(hour.path()).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| is_data_file(p));
    let Some(file) = newest_file else { return Ok(()) };
    let version = file_schema_version(&file);
    match version {
        Some(version) if version > SCHEMA_VERSION => Err(QueryError::Layout {
            path: file,
            reason: format!(
                "written with schema version {version}, newer than this build reads ({SCHEMA_VERSION}); upgrade echotrace"
            ),
        }),
        _ => Ok(()),
    }
}

fn is_data_file(path: &Path) -> bool {
    path.is_file()
        && path.extension().is_some_and(|e| e == "parquet")
        && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The schema version in a file's key-value metadata, if it can be read.
fn file_schema_version(path: &Path) -> Option<u32> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).ok()?).ok()?;
    let key_values = reader.metadata().file_metadata().key_value_metadata()?;
    key_values.iter().find(|kv| kv.key == SCHEMA_VERSION_KEY)?.value.as_deref()?.parse().ok()
}
