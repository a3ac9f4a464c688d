//! Embeddings kept on disk between runs of the measurement tools.
//!
//! The model's embeddings do not depend on the linking or the rules, so each text is embedded once
//! into a file per model, keyed by the detector's embedding key (a hash of the normalized text, so
//! streams that share texts share their embeddings); later runs read them back and relink a whole
//! stream in seconds instead of minutes.

use anyhow::Context;
use echotrace::embed::cached::{BatchEmbed, BatchEmbeddings};
use echotrace::embed::{EmbedConfig, Embedder, Encoder};
use echotrace_core::link::semantic::TextEmbedding;
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Embeddings by embedding key, read from and appended to one cache file, with the model loaded
/// only when a text is missing.
pub struct DiskEmbeddingCache {
    path: PathBuf,
    vectors: HashMap<u64, Arc<TextEmbedding>>,
    config: EmbedConfig,
    embedder: Option<Embedder>,
}

impl DiskEmbeddingCache {
    /// Reads the cache of the encoder `config` names in `dir`, empty if there is none yet.
    pub fn open(dir: &Path, config: &EmbedConfig) -> anyhow::Result<DiskEmbeddingCache> {
        let model = match config.encoder {
            Encoder::Static => "static-wordpiece".to_owned(),
            Encoder::Transformer => config.model_file.trim_end_matches(".onnx").to_owned(),
        };
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{model}-{}.embeddings", config.chunk_tokens));
        let mut vectors = HashMap::new();
        if let Ok(bytes) = std::fs::read(&path) {
            let mut reader = bytes.as_slice();
            // Records: key u64, tokens u32, dimension u32, values u32, then the f32 values.
            while !reader.is_empty() {
                let mut header = [0u8; 20];
                reader.read_exact(&mut header).context("truncated embedding cache")?;
                let key = u64::from_le_bytes(header[0..8].try_into()?);
                let tokens = u32::from_le_bytes(header[8..12].try_into()?);
                let dimension = u32::from_le_bytes(header[12..16].try_into()?) as usize;
                let values = u32::from_le_bytes(header[16..20].try_into()?) as usize;
                let mut raw = vec![0u8; values * 4];
                reader.read_exact(&mut raw).context("truncated embedding cache")?;
                let vectors_of = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
                vectors.insert(key, Arc::new(TextEmbedding { vectors: vectors_of.collect(), dimension, tokens }));
            }
        }
        Ok(DiskEmbeddingCache { path, vectors, config: config.clone(), embedder: None })
    }

    /// The cached embedding of `key`.
    pub fn get(&self, key: u64) -> Option<&Arc<TextEmbedding>> {
        self.vectors.get(&key)
    }

    /// Embeds the texts of `missing` that the cache lacks, and appends them to the file.
    fn fill(&mut self, missing: &[(u64, &str)]) -> anyhow::Result<u64> {
        if missing.is_empty() {
            return Ok(0);
        }
        let embedder = match &mut self.embedder {
            Some(embedder) => embedder,
            None => self.embedder.insert(Embedder::new(&self.config)?),
        };
        let texts: Vec<&str> = missing.iter().map(|(_, text)| *text).collect();
        let embedded = embedder.embed(&texts)?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut out = BufWriter::new(file);
        for ((key, _), embedding) in missing.iter().zip(embedded) {
            out.write_all(&key.to_le_bytes())?;
            out.write_all(&embedding.tokens.to_le_bytes())?;
            out.write_all(&(embedding.dimension as u32).to_le_bytes())?;
            out.write_all(&(embedding.vectors.len() as u32).to_le_bytes())?;
            for value in &embedding.vectors {
                out.write_all(&value.to_le_bytes())?;
            }
            self.vectors.insert(*key, Arc::new(embedding));
        }
        out.flush()?;
        Ok(missing.len() as u64)
    }

    /// Makes sure every keyed text of `posts` is cached; returns how many the model embedded.
    pub fn ensure(&mut self, posts: &[(Option<u64>, &str)]) -> anyhow::Result<u64> {
        let mut missing: Vec<(u64, &str)> = Vec::new();
        for (key, text) in posts {
            if let Some(key) = *key
                && !self.vectors.contains_key(&key)
                && !missing.iter().any(|(k, _)| *k == key)
            {
                missing.push((key, text));
            }
        }
        self.fill(&missing)
    }
}

impl BatchEmbed for DiskEmbeddingCache {
    fn embed_batch(&mut self, posts: &[(Option<u64>, &str)]) -> BatchEmbeddings {
        let started = Instant::now();
        let wanted = posts.iter().filter(|(key, _)| key.is_some()).count() as u64;
        let (embedded, failure) = match self.ensure(posts) {
            Ok(embedded) => (embedded, None),
            Err(error) => (0, Some(echotrace::embed::EmbedError::Inference(format!("{error:#}")))),
        };
        BatchEmbeddings {
            embeddings: posts.iter().map(|(key, _)| key.and_then(|key| self.vectors.get(&key).cloned())).collect(),
            embedded,
            reused: wanted.saturating_sub(embedded),
            failure,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}
