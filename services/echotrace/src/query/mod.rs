//! `echotrace query`: SQL over the stored datasets, with Apache DataFusion.
//!
//! [`session`] registers the tables `posts`, `edges`, `cascades`, `cascade_merges` and `alerts` over
//! the Parquet datasets of an output directory of `run`, `demo` or `replay` (a dataset with no file
//! yet is an empty table with its schema, so every query parses), and the analysts' functions in
//! [`udfs`]. [`output`] renders results as a table, CSV, JSON or a Parquet file. [`flight`] serves
//! the same tables to Arrow Flight SQL clients (`echotrace serve-sql`).
//!
//! Files appear at each checkpoint (`output.flush_interval_ms`, 5 s by default): rows younger than
//! that are not yet queryable.

pub mod flight;
pub mod output;
pub mod prompt;
pub mod udfs;

use crate::sinks::parquet::{alerts_batch, cascades_batch, edges_batch, merges_batch, posts_batch};
use arrow_array::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use std::path::Path;
use std::sync::Arc;

/// The tables, in the order they are registered.
pub const TABLES: [&str; 5] = ["posts", "edges", "cascades", "cascade_merges", "alerts"];

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
        if has_parquet_files(&dir) {
            let path = format!("{}/", dir.display());
            context.register_parquet(table, &path, ParquetReadOptions::default()).await?;
        } else {
            let empty = empty_table(table);
            context.register_table(table, Arc::new(MemTable::try_new(empty.schema(), vec![vec![empty]])?))?;
        }
    }
    udfs::register(context);
    Ok(())
}

/// Runs one SQL statement and collects its result.
pub async fn run(context: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    Ok(context.sql(sql).await?.collect().await?)
}

fn has_parquet_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".parquet")))
}

/// A dataset's schema, as the sink writes it, with no rows.
fn empty_table(table: &str) -> RecordBatch {
    match table {
        "posts" => posts_batch(&[]),
        "edges" => edges_batch(&[]),
        "cascades" => cascades_batch(&[], chrono::Utc::now()),
        "cascade_merges" => merges_batch(&[]),
        _ => alerts_batch(&[]),
    }
}
