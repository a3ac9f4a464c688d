//! The static encoder: a text's vector is the normalized mean of its tokens' rows in a table
//! distilled from the transformer (model2vec; `models/all-MiniLM-L6-v2/distill_static.py`).
//!
//! A text longer than `chunk_tokens` word pieces is cut into chunks of that many (at most
//! `max_chunks`), each with its own vector, as the transformer does, so coverage compares an
//! article part by part with either encoder. `[UNK]` keeps its row, as model2vec does for a
//! subword vocabulary. The sums run in one fixed order on plain `f32`, so a text gets the same vector on every processor.

use super::EmbedError;
use echotrace_core::link::semantic::TextEmbedding;
use std::path::Path;
use tokenizers::Tokenizer;

/// The token table and its tokenizer.
pub struct StaticEncoder {
    tokenizer: Tokenizer,
    /// Row-major, `vocabulary × dimension`.
    rows: Vec<f32>,
    dimension: usize,
    chunk_tokens: usize,
    max_chunks: usize,
}

impl StaticEncoder {
    /// Loads `model.safetensors` (a float32 tensor `embeddings`) and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, chunk_tokens: usize, max_chunks: usize) -> Result<StaticEncoder, EmbedError> {
        let model_path = dir.join("model.safetensors");
        let bad_model = |reason: String| EmbedError::Model { path: model_path.clone(), reason };
        let bytes = std::fs::read(&model_path).map_err(|error| bad_model(error.to_string()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|error| bad_model(error.to_string()))?;
        let table = tensors.tensor("embeddings").map_err(|error| bad_model(error.to_string()))?;
        let (dtype, shape) = (table.dtype(), table.shape().to_vec());
        if dtype != safetensors::Dtype::F32 || shape.len() != 2 || shape[1] == 0 {
            return Err(bad_model(format!("`embeddings` is {dtype:?} {shape:?}, not a float32 matrix")));
        }
        let rows: Vec<f32> =
            table.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();

        let tokenizer_path = dir.join("tokenizer.json");
        let bad_tokenizer = |reason: String| EmbedError::Model { path: tokenizer_path.clone(), reason };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|error| bad_tokenizer(error.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|error| bad_tokenizer(error.to_string()))?;
        if tokenizer.get_vocab_size(true) > shape[0] {
            return Err(bad_tokenizer(format!(
                "the vocabulary has {} tokens, the table {} rows",
                tokenizer.get_vocab_size(true),
                shape[0]
            )));
        }
        Ok(StaticEncoder {
            tokenizer,
            rows,
            dimension: shape[1],
            chunk_tokens: chunk_tokens.max(1),
            max_chunks: max_chunks.max(1),
        })
    }

    /// The vectors' dimension.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Embeds one text.
    pub fn embed(&self, text: &str) -> Result<TextEmbedding, EmbedError> {
        let encoding = self.tokenizer.encode(text, false).map_err(|error| EmbedError::Inference(error.to_string()))?;
        let ids = encoding.get_ids();
        let chunks: Vec<&[u32]> =
            if ids.is_empty() { vec![&[]] } else { ids.chunks(self.chunk_tokens).take(self.max_chunks).collect() };
        let mut vectors = Vec::with_capacity(chunks.len() * self.dimension);
        for chunk in chunks {
            let mut sum = vec![0f32; self.dimension];
            for &id in chunk {
                let row = &self.rows[id as usize * self.dimension..(id as usize + 1) * self.dimension];
                sum.iter_mut().zip(row).for_each(|(total, value)| *total += value);
            }
            // The mean's scale goes with the normalization; an empty text stays the zero vector.
            let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
            let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            vectors.extend(sum.iter().map(|value| value * scale));
        }
        Ok(TextEmbedding { vectors, dimension: self.dimension, tokens: ids.len() as u32 })
    }
}
