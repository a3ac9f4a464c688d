//! Sentence embeddings: the text → vector step of semantic linking.
//!
//! Two encoders, chosen by `embed.encoder`:
//!
//! - `transformer` (the default): the model itself through ONNX Runtime, on the CPU or a GPU; the
//!   rest of this module.
//! - `static` ([`static_tokens`]): token embeddings distilled once from the model by model2vec
//!   (`models/all-MiniLM-L6-v2/distill_static.py`); a text's vector is the normalized mean of its
//!   tokens' rows. It needs no runtime and runs orders of magnitude faster, but on the dev streams
//!   it links less well than the transformer (`docs/semantic-linking.md`, "Static embeddings"),
//!   so it is the fast first stage to build on, not yet the default.
//!
//! The transformer is all-MiniLM-L6-v2 exported to ONNX in fp32 (`models/all-MiniLM-L6-v2`, with the script
//! that reproduces it), so a text gets the same vector, to about 1e-7 in cosine, on every x86-64
//! processor and in every batch: the int8 models tried did not (`docs/semantic-linking.md`, "The
//! same links on every processor"). ONNX Runtime is loaded at start-up from the shared library
//! that the PyPI `onnxruntime` wheel carries (`embed.runtime_library`, or `ORT_DYLIB_PATH`), so
//! nothing is downloaded at build or run time. `embed.device = "cuda"` registers the CUDA execution
//! provider (a build with the `cuda` feature and the `onnxruntime-gpu` library); when it cannot
//! register, start-up fails with ONNX Runtime's reason unless `allow_cpu_fallback` is set.
//!
//! A text longer than `chunk_tokens` word pieces is cut into chunks of that many (at most
//! `max_chunks`), each embedded on its own, so an article is compared part by part. Chunks of a batch
//! are sorted by length and run in sub-batches padded to their longest, which wastes far less than
//! padding everything to the longest text. Each chunk is mean-pooled over its attention mask and
//! L2-normalized, as sentence-transformers does.

use echotrace_core::link::semantic::TextEmbedding;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

mod ascii_wordpiece;
pub mod cached;
pub mod checksums;
pub mod static_tokens;

use static_tokens::StaticEncoder;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// ONNX Runtime's CPU execution provider (the default).
    Cpu,
    /// ONNX Runtime's CUDA execution provider (needs the `cuda` build feature and a GPU).
    Cuda,
}

/// Which encoder turns texts into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoder {
    /// Static token embeddings distilled from the model: the mean of a text's token rows.
    Static,
    /// The transformer, through ONNX Runtime (CPU or CUDA).
    Transformer,
}

/// The `[embed]` section: the encoder, the model, the runtime and batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// Which encoder embeds the texts.
    pub encoder: Encoder,
    /// Folder with the static encoder's table (`model.safetensors`) and the vocabulary of its rows
    /// (`tokenizer.json`), looked up like `model_dir`; texts are tokenized by `model_dir`'s
    /// tokenizer.
    pub static_dir: PathBuf,
    /// Folder with the ONNX model and its `tokenizer.json`. A relative path is looked up from the
    /// working directory upwards, so the default finds the repository's `models/` from any folder
    /// inside it; deployments give an absolute path.
    pub model_dir: PathBuf,
    /// The model file inside `model_dir`.
    pub model_file: String,
    /// ONNX Runtime's shared library (`libonnxruntime.so.*`); `ORT_DYLIB_PATH` when unset.
    pub runtime_library: Option<PathBuf>,
    /// Where the model runs.
    pub device: Device,
    /// Which GPU, for `device = "cuda"`.
    pub cuda_device_id: i32,
    /// Run on the CPU when the CUDA provider cannot register, instead of failing at start-up.
    pub allow_cpu_fallback: bool,
    /// Threads for one batch (0: one per core): ONNX Runtime's intra-op threads for the
    /// transformer, the threads a batch's texts are split over for the static encoder, and the
    /// threads a batch's posts are prepared over before they are embedded.
    pub threads: usize,
    /// Posts per batch: a batch runs when this many wait…
    pub batch_size: usize,
    /// …or when the oldest has waited this long.
    pub batch_latency_ms: u64,
    /// Word pieces per chunk (the model's special tokens come on top).
    pub chunk_tokens: usize,
    /// Chunks per text at most; the rest of a very long text is not embedded.
    pub max_chunks: usize,
    /// Embeddings of recent normalized texts kept, so repeated texts are embedded once.
    pub cache_entries: usize,
    /// Check every model file against its `SHA256SUMS` before loading it ([`checksums`]); off
    /// only for a model under development.
    pub verify_checksums: bool,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            encoder: Encoder::Transformer,
            static_dir: PathBuf::from("models/all-MiniLM-L6-v2/static"),
            model_dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            model_file: "model.fp32.onnx".into(),
            runtime_library: None,
            device: Device::Cpu,
            cuda_device_id: 0,
            allow_cpu_fallback: false,
            threads: 0,
            batch_size: 32,
            batch_latency_ms: 20,
            chunk_tokens: 128,
            max_chunks: 8,
            cache_entries: 65_536,
            verify_checksums: true,
        }
    }
}

/// Why the embedder could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// No runtime library was configured.
    #[error(
        "ONNX Runtime was not found: set embed.runtime_library or ORT_DYLIB_PATH to the libonnxruntime.so.* that \
         `pip install onnxruntime==1.31.1` puts in onnxruntime/capi/ (scripts/setup does this), or turn semantic \
         linking off with detector.semantic.enabled = false"
    )]
    NoRuntime,
    /// The runtime library could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Runtime {
        /// The library tried.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A model file could not be read.
    #[error("cannot load {path}: {reason}")]
    Model {
        /// The file tried.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// CUDA was asked for and is not available.
    #[error("embed.device = \"cuda\" but {0}")]
    Cuda(String),
    /// Inference failed.
    #[error("embedding failed: {0}")]
    Inference(String),
}

impl<T> From<ort::Error<T>> for EmbedError {
    fn from(error: ort::Error<T>) -> Self {
        EmbedError::Inference(error.to_string())
    }
}

/// One chunk of one text, as token ids with the special tokens.
struct Piece {
    text: usize,
    ids: Vec<i64>,
}

/// Sentence embeddings by the configured encoder.
pub struct Embedder {
    encoder: Backend,
}

/// The encoder behind an [`Embedder`].
enum Backend {
    /// The encoder and the threads one batch is split over.
    Static(StaticEncoder, usize),
    Transformer(Transformer),
}

impl Embedder {
    /// Loads the configured encoder, its files checked against their `SHA256SUMS` first; fails with
    /// a clear reason.
    pub fn new(config: &EmbedConfig) -> Result<Embedder, EmbedError> {
        if config.verify_checksums {
            let (model_dir, static_dir) = (resolve(&config.model_dir), resolve(&config.static_dir));
            let files = match config.encoder {
                Encoder::Static => {
                    vec![
                        static_dir.join("model.safetensors"),
                        static_dir.join("tokenizer.json"),
                        model_dir.join("tokenizer.json"),
                    ]
                }
                Encoder::Transformer => vec![model_dir.join("tokenizer.json"), model_dir.join(&config.model_file)],
            };
            files.iter().try_for_each(|file| checksums::verify(file))?;
        }
        let encoder = match config.encoder {
            Encoder::Static if config.device == Device::Cuda => {
                return Err(EmbedError::Cuda(
                    "the static encoder runs on the CPU: set embed.encoder = \"transformer\" to embed on a GPU".into(),
                ));
            }
            Encoder::Static => Backend::Static(
                StaticEncoder::load(
                    &resolve(&config.static_dir),
                    &resolve(&config.model_dir).join("tokenizer.json"),
                    config.chunk_tokens,
                    config.max_chunks,
                )?,
                threads_or_cores(config.threads),
            ),
            Encoder::Transformer => Backend::Transformer(Transformer::new(config)?),
        };
        Ok(Embedder { encoder })
    }

    /// The encoder's output dimension.
    pub fn dimension(&self) -> usize {
        match &self.encoder {
            Backend::Static(encoder, _) => encoder.dimension(),
            Backend::Transformer(encoder) => encoder.dimension,
        }
    }

    /// Where the encoder runs: CUDA only when the transformer's execution provider registered.
    pub fn device(&self) -> Device {
        match &self.encoder {
            Backend::Static(..) => Device::Cpu,
            Backend::Transformer(encoder) => encoder.device,
        }
    }

    /// Embeds texts: one [`TextEmbedding`] per text, in order.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<TextEmbedding>, EmbedError> {
        match &mut self.encoder {
            Backend::Static(encoder, threads) => encoder.embed_all(texts, *threads),
            Backend::Transformer(encoder) => encoder.embed(texts),
        }
    }
}

/// `threads`, or one per core when it is 0.
pub(crate) fn threads_or_cores(threads: usize) -> usize {
    if threads > 0 { threads } else { std::thread::available_parallelism().map_or(1, |cores| cores.get()) }
}

/// The transformer: the tokenizer and the ONNX session.
struct Transformer {
    tokenizer: Tokenizer,
    session: Session,
    dimension: usize,
    device: Device,
    chunk_tokens: usize,
    max_chunks: usize,
    batch_size: usize,
    cls: i64,
    sep: i64,
}

impl Transformer {
    /// Loads the runtime, the tokenizer and the model; fails with a clear reason.
    fn new(config: &EmbedConfig) -> Result<Transformer, EmbedError> {
        let library = config
            .runtime_library
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .ok_or(EmbedError::NoRuntime)?;
        if !library.is_file() {
            return Err(EmbedError::Runtime { path: library, reason: "no such file".into() });
        }
        let environment = {
            // ONNX Runtime allows one environment per process, and one library: share both.
            static ENVIRONMENT: std::sync::Mutex<Option<Environment>> = std::sync::Mutex::new(None);
            let mut shared = ENVIRONMENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*shared {
                Some(environment) => environment.clone(),
                None => {
                    let runtime = ort::init_from(&library)
                        .map_err(|error| EmbedError::Runtime { path: library.clone(), reason: error.to_string() })?;
                    shared.insert(runtime.with_name("echotrace").build()?).clone()
                }
            }
        };

        let model_dir = resolve(&config.model_dir);
        let tokenizer_path = model_dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|error| EmbedError::Model { path: tokenizer_path.clone(), reason: error.to_string() })?;
        // The shipped tokenizer pads and truncates everything to 128 tokens; chunks are cut here instead.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|error| EmbedError::Model { path: tokenizer_path.clone(), reason: error.to_string() })?;
        let special = |token: &str| {
            tokenizer.token_to_id(token).map(i64::from).ok_or_else(|| EmbedError::Model {
                path: tokenizer_path.clone(),
                reason: format!("the vocabulary has no {token}"),
            })
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);

        let model_path = model_dir.join(&config.model_file);
        if !model_path.is_file() {
            return Err(EmbedError::Model { path: model_path, reason: "no such file".into() });
        }
        let mut builder = Session::builder(&environment)?.with_optimization_level(GraphOptimizationLevel::All)?;
        if config.threads > 0 {
            builder = builder.with_intra_threads(config.threads)?;
        }
        let mut device = Device::Cpu;
        if config.device == Device::Cuda {
            (builder, device) = with_cuda(builder, config)?;
        }
        let session = builder
            .commit_from_file(&model_path)
            .map_err(|error| EmbedError::Model { path: model_path.clone(), reason: error.to_string() })?;
        let mut embedder = Transformer {
            tokenizer,
            session,
            dimension: 0,
            device,
            chunk_tokens: config.chunk_tokens.max(1),
            max_chunks: config.max_chunks.max(1),
            batch_size: config.batch_size.max(1),
            cls,
            sep,
        };
        // One probe tells the model's dimension and fails now, not on the first post.
        embedder.dimension = embedder.run(&[vec![cls, sep]])?.len();
        Ok(embedder)
    }

    /// Embeds texts: one [`TextEmbedding`] per text, in order.
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<TextEmbedding>, EmbedError> {
        let mut pieces = Vec::new();
        let mut token_counts = Vec::with_capacity(texts.len());
        for (text, content) in texts.iter().enumerate() {
            let encoding =
                self.tokenizer.encode_fast(*content, false).map_err(|e| EmbedError::Inference(e.to_string()))?;
            let ids = encoding.get_ids();
            token_counts.push(ids.len() as u32);
            let chunks: Vec<&[u32]> =
                if ids.is_empty() { vec![&[]] } else { ids.chunks(self.chunk_tokens).take(self.max_chunks).collect() };
            for chunk in chunks {
                let mut with_special = Vec::with_capacity(chunk.len() + 2);
                with_special.push(self.cls);
                with_special.extend(chunk.iter().map(|&id| i64::from(id)));
                with_special.push(self.sep);
                pieces.push(Piece { text, ids: with_special });
            }
        }
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        order.sort_by_key(|&i| pieces[i].ids.len());
        let mut vectors = vec![Vec::new(); pieces.len()];
        for group in length_groups(&order, |i| pieces[i].ids.len(), self.batch_size) {
            let ids: Vec<Vec<i64>> = group.iter().map(|&i| std::mem::take(&mut pieces[i].ids)).collect();
            let pooled = self.run(&ids)?;
            for (row, &i) in group.iter().enumerate() {
                vectors[i] = pooled[row * self.dimension..(row + 1) * self.dimension].to_vec();
            }
        }
        let mut embeddings: Vec<TextEmbedding> = token_counts
            .iter()
            .map(|&tokens| TextEmbedding { vectors: Vec::new(), dimension: self.dimension, tokens })
            .collect();
        for (piece, vector) in pieces.iter().zip(vectors) {
            embeddings[piece.text].vectors.extend(vector);
        }
        Ok(embeddings)
    }

    /// Runs one padded batch and returns its pooled, normalized rows, concatenated.
    fn run(&mut self, batch: &[Vec<i64>]) -> Result<Vec<f32>, EmbedError> {
        let rows = batch.len();
        let width = batch.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        for (row, piece) in batch.iter().enumerate() {
            ids[row * width..row * width + piece.len()].copy_from_slice(piece);
            mask[row * width..row * width + piece.len()].fill(1);
        }
        let shape = [rows, width];
        let outputs = self.session.run(ort::inputs![
            "input_ids" => Tensor::from_array((shape, ids))?,
            "attention_mask" => Tensor::from_array((shape, mask.clone()))?,
            "token_type_ids" => Tensor::from_array((shape, vec![0i64; rows * width]))?,
        ])?;
        let (output_shape, hidden) = outputs["last_hidden_state"].try_extract_tensor::<f32>()?;
        let dimension = *output_shape.last().ok_or_else(|| EmbedError::Inference("scalar output".into()))? as usize;
        Ok(mean_pool_normalized(hidden, &mask, rows, width, dimension))
    }
}

/// A relative `path` found in the working directory or the nearest ancestor that has it; the path
/// itself when none has (the error then names it).
fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let Ok(cwd) = std::env::current_dir() else { return path.to_path_buf() };
    cwd.ancestors().map(|dir| dir.join(path)).find(|candidate| candidate.is_dir()).unwrap_or_else(|| path.to_path_buf())
}

/// Splits pieces sorted by length into runs of at most `batch_size` whose longest is at most twice
/// the shortest: padding stays under half of each batch, which saves compute.
fn length_groups(sorted: &[usize], length: impl Fn(usize) -> usize, batch_size: usize) -> Vec<&[usize]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for end in 1..=sorted.len() {
        let full = end - start == batch_size;
        let too_long = end < sorted.len() && length(sorted[end]) > 2 * length(sorted[start]);
        if end == sorted.len() || full || too_long {
            groups.push(&sorted[start..end]);
            start = end;
        }
    }
    groups
}

/// Mean over the positions the mask keeps, then L2 normalization, row by row.
fn mean_pool_normalized(hidden: &[f32], mask: &[i64], rows: usize, width: usize, dimension: usize) -> Vec<f32> {
    let mut pooled = vec![0f32; rows * dimension];
    for row in 0..rows {
        let out = &mut pooled[row * dimension..(row + 1) * dimension];
        let mut kept = 0f32;
        for position in 0..width {
            if mask[row * width + position] == 0 {
                continue;
            }
            kept += 1.0;
            let offset = (row * width + position) * dimension;
            for (sum, value) in out.iter_mut().zip(&hidden[offset..offset + dimension]) {
                *sum += value;
            }
        }
        let kept = kept.max(1e-9);
        out.iter_mut().for_each(|value| *value /= kept);
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        out.iter_mut().for_each(|value| *value /= norm);
    }
    pooled
}

/// Registers the CUDA execution provider; where it cannot register, fails, or with
/// `allow_cpu_fallback` warns and goes on with the CPU. Returns the builder and the device it got.
#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    config: &EmbedConfig,
) -> Result<(ort::session::builder::SessionBuilder, Device), EmbedError> {
    let provider = ort::ep::CUDA::default().with_device_id(config.cuda_device_id).build().error_on_failure();
    match builder.with_execution_providers([provider]) {
        Ok(builder) => Ok((builder, Device::Cuda)),
        Err(error) if config.allow_cpu_fallback => {
            tracing::warn!(reason = %error, "the CUDA execution provider did not register; embedding on the CPU (embed.allow_cpu_fallback)");
            Ok((error.recover(), Device::Cpu))
        }
        Err(error) => Err(EmbedError::Cuda(format!(
            "the CUDA execution provider did not register ({error}); a GPU, CUDA 13, cuDNN 9 and the \
             onnxruntime-gpu library are needed, or set embed.allow_cpu_fallback = true"
        ))),
    }
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _config: &EmbedConfig,
) -> Result<(ort::session::builder::SessionBuilder, Device), EmbedError> {
    Err(EmbedError::Cuda("this build has no CUDA support: build with `--features cuda`".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_groups_bound_padding_and_size() {
        let lengths = [3, 4, 12, 13, 14, 40, 41, 42, 43];
        let sorted: Vec<usize> = (0..lengths.len()).collect();
        let groups = length_groups(&sorted, |i| lengths[i], 3);
        assert_eq!(groups, vec![&[0, 1][..], &[2, 3, 4], &[5, 6, 7], &[8]]);
        assert!(length_groups(&[], |i| i, 3).is_empty());
    }

    #[test]
    fn pooling_ignores_padding_and_normalizes() {
        // Two positions kept ([1, 0] and [3, 0]), one padded ([100, 100]).
        let hidden = [1.0, 0.0, 3.0, 0.0, 100.0, 100.0];
        let pooled = mean_pool_normalized(&hidden, &[1, 1, 0], 1, 3, 2);
        assert_eq!(pooled, vec![1.0, 0.0]);
    }
}
