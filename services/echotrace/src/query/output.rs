//! Rendering query results: an aligned table for people, CSV and JSON lines for tools, Parquet for
//! more analysis.

use arrow_array::RecordBatch;
use clap::ValueEnum;
use std::io::Write;
use std::path::Path;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
    /// A Parquet file (needs `--output`).
    Parquet,
}

/// Writes `batches` in `format` to `out`, or to the file `path` for Parquet.
pub fn write(batches: &[RecordBatch], format: Format, out: &mut dyn Write, path: Option<&Path>) -> anyhow::Result<()> {
    match format {
        Format::Table => writeln!(out, "{}", arrow_cast::pretty::pretty_format_batches(batches)?)?,
        Format::Csv => {
            let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = arrow_json::LineDelimitedWriter::new(out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        Format::Parquet => {
            let path = path.ok_or_else(|| anyhow::anyhow!("--format parquet needs --output FILE"))?;
            let schema = match batches.first() {
                Some(batch) => batch.schema(),
                None => anyhow::bail!("the query returned no batch to write"),
            };
            let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path)?, schema, None)?;
            for batch in batches {
                writer.write(batch)?;
            }
            writer.close()?;
        }
    }
    Ok(())
}
