//! The history a backtest runs over: a JSONL stream, or the posts a past run stored.
//!
//! Either way posts reach the detector in batches, as in `replay`: the posts of a batch that need
//! an embedding get it together before any of them is linked. A stored post brings the embedding
//! the run stored (`posts.embedding`); a post without one, where the detector wants one, is
//! embedded by the configured model.

use super::Backtest;
use crate::embed::cached::BatchEmbed;
use crate::query::QueryError;
use crate::replay::{REPLAY_LATEST, open_input};
use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use chrono::{DateTime, Utc};
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::{Author, Post};
use echotrace_core::prepare::PreparedPost;
use futures::StreamExt;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// Feeds posts to a [`Backtest`] in embedding batches.
pub struct Feeder<'a> {
    backtest: &'a mut Backtest,
    embedder: Option<Box<dyn BatchEmbed + 'a>>,
    batch: Vec<(Post, Option<Arc<TextEmbedding>>)>,
    batch_size: usize,
    /// Texts the model embedded.
    pub embedded: u64,
}

impl<'a> Feeder<'a> {
    /// Feeds `backtest`; `embedder` embeds what needs it (none: semantic linking is off).
    pub fn new(
        backtest: &'a mut Backtest,
        embedder: Option<Box<dyn BatchEmbed + 'a>>,
        batch_size: usize,
    ) -> Feeder<'a> {
        Feeder { backtest, embedder, batch: Vec::with_capacity(batch_size), batch_size: batch_size.max(1), embedded: 0 }
    }

    /// Takes one post, with the embedding stored for it if any.
    pub fn push(&mut self, post: Post, stored: Option<TextEmbedding>) -> anyhow::Result<()> {
        self.batch.push((post, stored.map(Arc::new)));
        if self.batch.len() >= self.batch_size {
            self.run_batch()?;
        }
        Ok(())
    }

    /// Links the waiting batch.
    pub fn run_batch(&mut self) -> anyhow::Result<()> {
        let preparer = self.backtest.detector().preparer();
        let mut batch: Vec<(PreparedPost, Option<Arc<TextEmbedding>>)> = std::mem::take(&mut self.batch)
            .into_iter()
            .map(|(post, stored)| (preparer.prepare(post), stored))
            .collect();
        if let Some(embedder) = &mut self.embedder {
            let detector = self.backtest.detector();
            let keys: Vec<(Option<u64>, &str)> = batch
                .iter()
                .map(|(prepared, stored)| {
                    let key = if stored.is_some() { None } else { detector.embedding_key(prepared) };
                    (key, prepared.post.text.as_str())
                })
                .collect();
            let outcome = embedder.embed_batch(&keys);
            if let Some(error) = outcome.failure {
                return Err(error).context("embedding a batch of the backtest's posts");
            }
            self.embedded += outcome.embedded;
            for ((_, stored), embedded) in batch.iter_mut().zip(outcome.embeddings) {
                if stored.is_none() {
                    *stored = embedded;
                }
            }
        }
        for (prepared, embedding) in batch {
            self.backtest.observe(prepared, embedding.as_deref());
        }
        Ok(())
    }
}

/// Feeds every valid post of a JSONL file (`.gz` accepted) in file order; returns the lines that
/// were not valid posts, which are left out as `replay` dead-letters them.
pub fn feed_jsonl(path: &Path, feeder: &mut Feeder) -> anyhow::Result<u64> {
    let (reader, _) = open_input(path).with_context(|| format!("cannot read {}", path.display()))?;
    let latest_now = REPLAY_LATEST - echotrace_core::post::MAX_FUTURE_SKEW;
    let mut invalid = 0;
    for line in reader.split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Post::from_json_at(&line, latest_now) {
            Ok(post) => feeder.push(post, None)?,
            Err(_) => invalid += 1,
        }
    }
    feeder.run_batch()?;
    Ok(invalid)
}

/// The columns a stored post is rebuilt from.
const COLUMNS: &str = "post_id, platform, author_id, author_handle, created_at, text, lang, author_created_at, \
    author_followers, author_declared_automated, urls, mentions, repost_of, quote_of, reply_to, embedding, \
    embedding_tokens";

/// Feeds the posts stored under `data_dir` (`posts/`), in the order the run processed them, each
/// once.
pub async fn feed_stored(data_dir: &Path, feeder: &mut Feeder<'_>) -> anyhow::Result<u64> {
    let session = crate::query::session(data_dir).await?;
    let older = crate::query::run(&session, "SELECT count(*) FROM posts WHERE urls IS NULL").await?;
    let older =
        older.first().map_or(0, |batch| batch.column(0).as_primitive::<arrow_array::types::Int64Type>().value(0));
    if older > 0 {
        return Err(QueryError::Layout {
            path: data_dir.join("posts"),
            reason: format!(
                "{older} stored posts were written before echotrace kept their whole input (urls, mentions, \
                 references, the author's account); backtest them from the input stream with --input"
            ),
        }
        .into());
    }
    // The order the run processed them in: its flushes in time order, and within one flush the
    // writer's arrival sequence (several writers interleave by flush).
    let sql = format!("SELECT {COLUMNS} FROM posts ORDER BY ingested_at, arrival, post_id");
    let frame = session.sql(&sql).await.map_err(QueryError::from)?;
    let mut stream = frame.execute_stream().await.map_err(QueryError::from)?;
    let mut seen = std::collections::HashSet::new();
    let mut posts = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(QueryError::from)?;
        for (post, embedding) in stored_rows(&batch)? {
            // A post stored twice (at-least-once delivery, or a compacted file beside its sources)
            // is linked once, where it first came.
            if !seen.insert(post.id.clone()) {
                continue;
            }
            posts += 1;
            feeder.push(post, embedding)?;
        }
    }
    feeder.run_batch()?;
    Ok(posts)
}

/// The posts of one batch of [`COLUMNS`].
fn stored_rows(batch: &RecordBatch) -> anyhow::Result<Vec<(Post, Option<TextEmbedding>)>> {
    let text = |name: &str| -> anyhow::Result<Vec<Option<String>>> {
        let column = arrow_cast::cast(batch.column_by_name(name).context("column")?, &DataType::Utf8)?;
        Ok(column.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect())
    };
    let time = |name: &str| -> anyhow::Result<Vec<Option<DateTime<Utc>>>> {
        let column = batch.column_by_name(name).context("column")?.as_primitive::<TimestampMillisecondType>();
        Ok(column.iter().map(|v| v.and_then(DateTime::from_timestamp_millis)).collect())
    };
    let list = |name: &str| -> anyhow::Result<Vec<Vec<String>>> {
        let column = batch.column_by_name(name).context("column")?.as_list::<i32>();
        let mut rows = Vec::with_capacity(column.len());
        for index in 0..column.len() {
            let values = arrow_cast::cast(&column.value(index), &DataType::Utf8)?;
            rows.push(values.as_string::<i32>().iter().flatten().map(str::to_owned).collect());
        }
        Ok(rows)
    };
    let (ids, platforms, authors, handles) =
        (text("post_id")?, text("platform")?, text("author_id")?, text("author_handle")?);
    let (texts, langs, reposts, quotes, replies) =
        (text("text")?, text("lang")?, text("repost_of")?, text("quote_of")?, text("reply_to")?);
    let (created, author_created) = (time("created_at")?, time("author_created_at")?);
    let (urls, mentions) = (list("urls")?, list("mentions")?);
    let followers = batch.column_by_name("author_followers").context("column")?.as_primitive::<UInt64Type>();
    let automated = batch.column_by_name("author_declared_automated").context("column")?.as_boolean();
    let embeddings = batch.column_by_name("embedding").context("column")?.as_list::<i32>();
    let tokens = batch.column_by_name("embedding_tokens").context("column")?.as_primitive::<UInt32Type>();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for index in 0..batch.num_rows() {
        let required = |values: &[Option<String>]| values[index].clone().unwrap_or_default();
        let post = Post {
            id: required(&ids),
            platform: required(&platforms),
            author: Author {
                id: required(&authors),
                handle: required(&handles),
                created_at: author_created[index],
                followers: followers.is_valid(index).then(|| followers.value(index)),
                declared_automated: automated.is_valid(index).then(|| automated.value(index)),
            },
            created_at: created[index].context("a stored post without created_at")?,
            text: required(&texts),
            lang: langs[index].clone(),
            urls: urls[index].clone(),
            mentions: mentions[index].clone(),
            repost_of: reposts[index].clone(),
            quote_of: quotes[index].clone(),
            reply_to: replies[index].clone(),
        };
        let embedding = (embeddings.is_valid(index) && tokens.is_valid(index))
            .then(|| stored_embedding(&embeddings.value(index), tokens.value(index)))
            .flatten();
        rows.push((post, embedding));
    }
    Ok(rows)
}

/// One stored `embedding` (a list of chunk vectors) as the detector takes it.
fn stored_embedding(chunks: &dyn Array, tokens: u32) -> Option<TextEmbedding> {
    let chunks = chunks.as_list::<i32>();
    let mut vectors = Vec::new();
    let mut dimension = 0;
    for index in 0..chunks.len() {
        let chunk = chunks.value(index);
        let values = chunk.as_primitive::<Float32Type>();
        dimension = values.len();
        vectors.extend(values.values().iter().copied());
    }
    (dimension > 0).then_some(TextEmbedding { vectors, dimension, tokens })
}
