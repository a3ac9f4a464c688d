//! Embeddings per second of the Rust path, against Python onnxruntime on the same model, texts and
//! thread count, in the same run.
//!
//! ```sh
//! export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
//! cargo run --release -p echotrace-benches --bin embed-throughput -- \
//!     ../shared/data/paraphrase_tweets_train.jsonl [--texts 2000] [--threads 2] [--model model.fp32.onnx]
//! ```
//!
//! Texts are the `text` fields of the first `--texts` posts of a JSON-lines stream. For each batch size
//! (1, 32, 128) it prints sentences/s for Rust and for Python onnxruntime (tokenized with the
//! `tokenizers` package, padded per batch, mean-pooled), and their ratio; then the static encoder's
//! texts/s on the same texts and its ratio to the transformer's best batch.

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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut input = None;
    let (mut count, mut threads, mut model) = (2000usize, 2usize, "model.fp32.onnx".to_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--texts" => count = args.next().context("--texts N")?.parse()?,
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--model" => model = args.next().context("--model FILE")?,
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
    println!("batch  rust/s  python/s  rust÷python");
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
        let mut python = std::process::Command::new("python3")
            .arg("-c")
            .arg(PYTHON)
            .arg(model_dir.join(&model))
            .arg(model_dir.join("tokenizer.json"))
            .arg(threads.to_string())
            .arg(batch.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("python3 with onnxruntime, tokenizers and numpy")?;
        python.stdin.take().context("stdin")?.write_all(texts_json.as_bytes())?;
        let output = python.wait_with_output()?;
        let python: f64 = String::from_utf8(output.stdout)?.trim().parse().context("python's figure")?;
        println!("{batch:>5}  {rust:>6.0}  {python:>8.0}  {:>11.2}", rust / python);
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
