//! The static encoder: a text's vector is the normalized mean of its tokens' rows in a table
//! distilled from the transformer (model2vec; `models/all-MiniLM-L6-v2/distill_static.py`).
//!
//! Texts are tokenized by the transformer's own WordPiece tokenizer, and each WordPiece id is
//! mapped to its row by name (`##piece` is model2vec's `piece`, a word-initial `word` its
//! `▁word`). model2vec ships a Unigram copy of the vocabulary with some thirty string replacements
//! in front, which spent most of the encoder's time on long texts (its Viterbi search runs over
//! a whole article at once); WordPiece splits words first and matches greedily, as the
//! transformer does. The two tokenizations differ on rare words and on punctuation (model2vec's
//! reads a full stop after a word as the piece `##.`), so the vectors are close to model2vec's
//! but not equal (`tests/embedding.rs`).
//!
//! A text longer than `chunk_tokens` word pieces is cut into chunks of that many (at most
//! `max_chunks`), each with its own vector, as the transformer does, so coverage compares an
//! article part by part with either encoder. `[UNK]` keeps its row, as model2vec does for a
//! subword vocabulary. The sums run in one fixed order on plain `f32`, so a text gets the same vector on every processor.

use super::EmbedError;
use super::ascii_wordpiece::AsciiWordPiece;
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::parallel::map_in_order;
use std::path::Path;
use tokenizers::Tokenizer;

/// The token table and its tokenizer.
pub struct StaticEncoder {
    tokenizer: Tokenizer,
    /// The same tokenization for ASCII texts, without the Unicode table searches.
    ascii: Option<AsciiWordPiece>,
    /// The table row of each WordPiece id.
    row_of: Vec<u32>,
    /// Row-major, `vocabulary × dimension`.
    rows: Vec<f32>,
    dimension: usize,
    chunk_tokens: usize,
    max_chunks: usize,
}

impl StaticEncoder {
    /// Loads `model.safetensors` (a float32 tensor `embeddings`) and the vocabulary of its rows
    /// (`tokenizer.json`) from `dir`, and the transformer's WordPiece tokenizer from `wordpiece`.
    pub fn load(
        dir: &Path,
        wordpiece: &Path,
        chunk_tokens: usize,
        max_chunks: usize,
    ) -> Result<StaticEncoder, EmbedError> {
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

        let load_tokenizer = |path: &Path| {
            let bad = |reason: String| EmbedError::Model { path: path.to_path_buf(), reason };
            let mut tokenizer = Tokenizer::from_file(path).map_err(|error| bad(error.to_string()))?;
            tokenizer.with_padding(None);
            tokenizer.with_truncation(None).map_err(|error| bad(error.to_string()))?;
            Ok::<_, EmbedError>(tokenizer)
        };
        let vocabulary_path = dir.join("tokenizer.json");
        let table_vocabulary = load_tokenizer(&vocabulary_path)?.get_vocab(true);
        let bad_vocabulary = |reason: String| EmbedError::Model { path: vocabulary_path.clone(), reason };
        if table_vocabulary.len() > shape[0] {
            return Err(bad_vocabulary(format!(
                "the vocabulary has {} tokens, the table {} rows",
                table_vocabulary.len(),
                shape[0]
            )));
        }
        let unknown = *table_vocabulary.get("[UNK]").ok_or_else(|| bad_vocabulary("it has no [UNK] token".into()))?;
        let tokenizer = load_tokenizer(wordpiece)?;
        let wordpiece_vocabulary = tokenizer.get_vocab(true);
        // Ids the table lacks (the unused entries, [CLS], [SEP], [MASK]) take the [UNK] row.
        let mut row_of = vec![unknown; wordpiece_vocabulary.values().max().map_or(0, |&id| id as usize + 1)];
        for (token, id) in &wordpiece_vocabulary {
            let name = match token.strip_prefix("##") {
                _ if token == "[PAD]" || token == "[UNK]" => token.clone(),
                Some(piece) => piece.to_owned(),
                None => format!("\u{2581}{token}"),
            };
            if let Some(&row) = table_vocabulary.get(&name) {
                row_of[*id as usize] = row;
            }
        }
        Ok(StaticEncoder {
            ascii: AsciiWordPiece::for_tokenizer(&tokenizer),
            tokenizer,
            row_of,
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

    /// Embeds texts, in order, split over at most `threads` threads: each text's vector depends on
    /// it alone, so the split changes nothing but the time.
    pub fn embed_all(&self, texts: &[&str], threads: usize) -> Result<Vec<TextEmbedding>, EmbedError> {
        // Below this many texts a thread costs more to start than it saves.
        const TEXTS_PER_THREAD: usize = 8;
        map_in_order(texts.to_vec(), threads, TEXTS_PER_THREAD, |text| self.embed(text)).into_iter().collect()
    }

    /// Embeds one text.
    pub fn embed(&self, text: &str) -> Result<TextEmbedding, EmbedError> {
        let ids = match self.ascii.as_ref().and_then(|ascii| ascii.tokenize(text)) {
            Some(ids) => ids,
            None => self.token_ids(text)?,
        };
        let chunks: Vec<&[u32]> =
            if ids.is_empty() { vec![&[]] } else { ids.chunks(self.chunk_tokens).take(self.max_chunks).collect() };
        let mut vectors = Vec::with_capacity(chunks.len() * self.dimension);
        for chunk in chunks {
            let mut sum = vec![0f32; self.dimension];
            for &id in chunk {
                let row = self.row_of.get(id as usize).map_or(0, |&row| row as usize);
                let row = &self.rows[row * self.dimension..(row + 1) * self.dimension];
                sum.iter_mut().zip(row).for_each(|(total, value)| *total += value);
            }
            // The mean's scale goes with the normalization; an empty text stays the zero vector.
            let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
            let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            vectors.extend(sum.iter().map(|value| value * scale));
        }
        Ok(TextEmbedding { vectors, dimension: self.dimension, tokens: ids.len() as u32 })
    }

    /// The WordPiece ids of `text` by `tokenizers` itself.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding =
            self.tokenizer.encode_fast(text, false).map_err(|error| EmbedError::Inference(error.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The WordPiece ids of `text` by the ASCII fast path, `None` where it leaves the text to
    /// `tokenizers` (non-ASCII, a special token's literal).
    pub fn ascii_token_ids(&self, text: &str) -> Option<Vec<u32>> {
        self.ascii.as_ref()?.tokenize(text)
    }
}
