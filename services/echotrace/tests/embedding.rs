//! The Rust embedding path against the reference that `models/all-MiniLM-L6-v2/export.py` computes:
//! the shipped fp32 model run by Python onnxruntime one sentence at a time (no padding).
//!
//! The fp32 model's vectors depend neither on the processor's kernels nor on a text's batch-mates
//! beyond the last bits (`docs/semantic-linking.md`, "The same links on every processor": 1e-7 in
//! cosine between AVX-512 VNNI and AVX2). The committed reference, taken on the machine that
//! exported the model, is therefore a reference on every machine: alone or in a padded batch, each
//! vector matches it to 1e-5 in cosine.

mod common;

use echotrace::embed::{EmbedConfig, Embedder};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_tokens: usize,
    sentences: Vec<String>,
    fp32: Vec<Vec<f32>>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn embedder(chunk_tokens: usize, max_chunks: usize, batch_size: usize) -> Option<Embedder> {
    let library = common::onnxruntime_library()?;
    let config = EmbedConfig {
        model_dir: common::model_dir(),
        runtime_library: Some(library),
        threads: 2,
        chunk_tokens,
        max_chunks,
        batch_size,
        ..EmbedConfig::default()
    };
    Some(Embedder::new(&config).expect("the shipped model loads"))
}

#[test]
fn rust_embeddings_match_the_reference_alone_and_in_a_padded_batch() {
    let reference: Reference =
        serde_json::from_str(include_str!("fixtures/embedding_reference.json")).expect("fixture parses");
    // The reference truncates at max_tokens including [CLS] and [SEP]: one chunk of the same length.
    let Some(mut one_by_one) = embedder(reference.max_tokens - 2, 1, 1) else { return };
    let Some(mut batched) = embedder(reference.max_tokens - 2, 1, 32) else { return };
    assert_eq!(one_by_one.dimension(), 384);
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let embeddings = one_by_one.embed(&texts).unwrap();
    // One padded batch: texts of one word piece next to one of 256.
    let in_one_batch = batched.embed(&texts).unwrap();
    for (i, embedding) in embeddings.iter().enumerate() {
        assert_eq!(embedding.chunks(), 1);
        let alone = cosine(&embedding.vectors, &reference.fp32[i]);
        assert!(alone >= 1.0 - 1e-5, "{:?}: cosine to the reference {alone}", texts[i]);
        let padded = cosine(&in_one_batch[i].vectors, &reference.fp32[i]);
        assert!(padded >= 1.0 - 1e-5, "{:?}: cosine to the reference in a padded batch {padded}", texts[i]);
        let norm: f32 = embedding.vectors.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn long_texts_are_embedded_chunk_by_chunk_and_summaries_find_their_part() {
    let Some(mut embedder) = embedder(128, 8, 32) else { return };
    let filler = "The committee also reviewed the budget for the municipal library and the parks. ".repeat(20);
    let article = format!(
        "{filler} In the final session the harbour authority confirmed the old swing bridge will close for \
         repairs for six weeks from Monday, diverting ferry traffic to the north quay."
    );
    let summary =
        "The harbour's swing bridge closes for six weeks of repairs from Monday; ferries move to the north quay.";
    let unrelated = "Local football club signs a new goalkeeper ahead of the derby.";
    let out = embedder.embed(&[&article, summary, unrelated]).unwrap();
    assert!(out[0].chunks() > 2, "a long article becomes several chunks");
    assert!(out[0].tokens > 300);
    let best = |query: &[f32], target: &echotrace_core::link::semantic::TextEmbedding| {
        target.vectors.chunks(384).map(|chunk| cosine(query, chunk)).fold(f32::MIN, f32::max)
    };
    let last_chunk = best(&out[1].vectors, &out[0]);
    let first_chunk = cosine(&out[1].vectors, &out[0].vectors[..384]);
    assert!(last_chunk > 0.6, "the summary matches the article's last part: {last_chunk}");
    assert!(last_chunk > first_chunk + 0.2, "and not its opening: {first_chunk}");
    assert!(best(&out[2].vectors, &out[0]) < 0.4);
}

#[test]
fn a_missing_runtime_or_model_is_a_clear_error() {
    let config =
        EmbedConfig { runtime_library: Some("/nonexistent/libonnxruntime.so".into()), ..EmbedConfig::default() };
    let message = Embedder::new(&config).err().expect("no runtime").to_string();
    assert!(message.contains("/nonexistent/libonnxruntime.so"), "{message}");
    let Some(library) = common::onnxruntime_library() else { return };
    let config = EmbedConfig {
        runtime_library: Some(library),
        model_dir: "/nonexistent/model".into(),
        ..EmbedConfig::default()
    };
    let message = Embedder::new(&config).err().expect("no model").to_string();
    assert!(message.contains("/nonexistent/model/tokenizer.json"), "{message}");
}

/// The shipped model with `device = "cuda"`; `None` (the test skips) without ONNX Runtime.
fn cuda_config() -> Option<EmbedConfig> {
    Some(EmbedConfig {
        runtime_library: Some(common::onnxruntime_library()?),
        model_dir: common::model_dir(),
        device: echotrace::embed::Device::Cuda,
        ..EmbedConfig::default()
    })
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_cuda_build_fails_at_start_up() {
    let Some(config) = cuda_config() else { return };
    let message = Embedder::new(&config).err().expect("no CUDA in this build").to_string();
    assert!(message.contains("--features cuda"), "{message}");
}

/// With the `cuda` build: where the provider cannot register (no GPU, no CUDA libraries, or the CPU
/// wheel's library), start-up fails and names why, unless `allow_cpu_fallback`, which runs on the
/// CPU and says so. On a GPU node the provider registers and the embedder reports CUDA.
#[cfg(feature = "cuda")]
#[test]
fn cuda_that_cannot_register_fails_at_start_up_or_falls_back_when_allowed() {
    use echotrace::embed::Device;
    let Some(config) = cuda_config() else { return };
    match Embedder::new(&config) {
        Ok(embedder) => assert_eq!(embedder.device(), Device::Cuda),
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("CUDA execution provider did not register"), "{message}");
            let fallback =
                Embedder::new(&EmbedConfig { allow_cpu_fallback: true, ..config }).expect("falls back to the CPU");
            assert_eq!(fallback.device(), Device::Cpu);
        }
    }
}

/// The static encoder's vectors: `models/all-MiniLM-L6-v2/distill_static.py` writes, for a fixed
/// sentence set, the vectors of its table over the transformer's WordPiece tokens (what the encoder
/// computes) and model2vec's own vectors (over model2vec's Unigram tokens) beside the table. The
/// Rust encoder must give the first, an empty text the zero vector, and stay close to the second.
/// It needs no runtime, so it runs everywhere.
#[test]
fn static_embeddings_match_the_table_and_stay_close_to_model2vec() {
    #[derive(Deserialize)]
    struct StaticReference {
        sentences: Vec<String>,
        vectors: Vec<Vec<f32>>,
        wordpiece_vectors: Vec<Vec<f32>>,
    }
    let reference: StaticReference =
        serde_json::from_str(include_str!("fixtures/static_embedding_reference.json")).expect("fixture parses");
    let config = EmbedConfig {
        encoder: echotrace::embed::Encoder::Static,
        static_dir: common::model_dir().join("static"),
        model_dir: common::model_dir(),
        ..EmbedConfig::default()
    };
    let mut embedder = Embedder::new(&config).expect("the shipped static table loads");
    assert_eq!(embedder.dimension(), 256);
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let embeddings = embedder.embed(&texts).unwrap();
    let mut agreement_with_model2vec = Vec::new();
    for (text, (embedding, (expected, model2vec))) in
        texts.iter().zip(embeddings.iter().zip(reference.wordpiece_vectors.iter().zip(&reference.vectors)))
    {
        assert_eq!(embedding.chunks(), 1);
        if expected.iter().all(|x| *x == 0.0) {
            assert!(embedding.vectors.iter().all(|x| *x == 0.0), "{text:?} embeds to zero");
        } else {
            let agreement = cosine(&embedding.vectors, expected);
            assert!(agreement >= 1.0 - 1e-5, "{text:?}: cosine to the reference {agreement}");
            agreement_with_model2vec.push(cosine(&embedding.vectors, model2vec));
        }
    }
    // Plain sentences tokenize alike but for punctuation; emoji and rare words differ more.
    let mean = agreement_with_model2vec.iter().sum::<f32>() / agreement_with_model2vec.len() as f32;
    assert!(mean >= 0.9, "mean cosine to model2vec's vectors {mean}: {agreement_with_model2vec:?}");
    // A long text is cut into chunks as the transformer's are.
    let long = "word ".repeat(300);
    assert_eq!(embedder.embed(&[&long]).unwrap()[0].chunks(), 3);

    // A batch split over threads gives each text the vector it gets alone, in order.
    let batch: Vec<String> = (0..40).map(|i| format!("{} number {i}", texts[i % texts.len()])).collect();
    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
    let one_thread = Embedder::new(&EmbedConfig { threads: 1, ..config.clone() }).unwrap().embed(&batch).unwrap();
    let four_threads = Embedder::new(&EmbedConfig { threads: 4, ..config }).unwrap().embed(&batch).unwrap();
    assert_eq!(one_thread, four_threads);
    assert_eq!(one_thread[7], embedder.embed(&[batch[7]]).unwrap()[0]);
}

#[test]
fn the_static_encoder_refuses_a_gpu_and_names_a_missing_table() {
    let on_gpu = EmbedConfig {
        encoder: echotrace::embed::Encoder::Static,
        device: echotrace::embed::Device::Cuda,
        ..EmbedConfig::default()
    };
    let message = Embedder::new(&on_gpu).err().expect("static runs on the CPU").to_string();
    assert!(message.contains("encoder = \"transformer\""), "{message}");
    let missing = EmbedConfig {
        encoder: echotrace::embed::Encoder::Static,
        static_dir: "/nonexistent/static".into(),
        ..EmbedConfig::default()
    };
    let message = Embedder::new(&missing).err().expect("no table").to_string();
    assert!(message.contains("/nonexistent/static/model.safetensors"), "{message}");
}

/// The static encoder's ASCII fast path gives the ids `tokenizers` gives: on the demo sample's
/// texts, and on generated texts full of what the rules single out (case, punctuation, control
/// characters, tabs and newlines, words too long or not in the vocabulary, special-token literals).
#[test]
fn the_ascii_fast_path_tokenizes_as_the_library_does() {
    use echotrace::embed::static_tokens::StaticEncoder;
    let model_dir = common::model_dir();
    let encoder = StaticEncoder::load(&model_dir.join("static"), &model_dir.join("tokenizer.json"), 128, 8)
        .expect("the shipped static table loads");
    let mut texts: Vec<String> = common::SAMPLE
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["text"].as_str().unwrap().to_owned())
        .collect();
    let pieces = [
        "Breaking",
        "NEWS",
        "wikileaks",
        "maintainer's",
        "re-summarised",
        "U.S.",
        "$4.2bn",
        "#hashtag",
        "@handle",
        "https://example.com/a?b=c&d=e",
        "unbelievably",
        "xqzvvkkw",
        "[CLS]",
        "[cls]",
        "[UNK]",
        "[MASK",
        "...",
        "--",
        "\t",
        "\n",
        "\r\n",
        "\u{0b}",
        "\u{0c}",
        "\u{00}",
        "\u{1f}",
        "\u{7f}",
        "  ",
        "!!",
        "'quoted'",
        "(x)",
        "a_b",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3_000 {
        let words = 1 + next() % 30;
        let mut text = String::new();
        for _ in 0..words {
            match next() % 10 {
                0 => text.push_str(&"ab".repeat(40 + (next() % 30) as usize)),
                1 => text.push((b' ' + (next() % 95) as u8) as char),
                _ => text.push_str(pieces[(next() % pieces.len() as u64) as usize]),
            }
            if next() % 3 > 0 {
                text.push(' ');
            }
        }
        texts.push(text);
    }
    let (mut fast, mut left_to_library) = (0, 0);
    for text in &texts {
        let expected = encoder.token_ids(text).unwrap();
        match encoder.ascii_token_ids(text) {
            Some(ids) => {
                assert_eq!(ids, expected, "{text:?}");
                fast += 1;
            }
            None => {
                assert!(!text.is_ascii() || text.contains("[CLS]") || text.contains("[UNK]"), "{text:?}");
                left_to_library += 1;
            }
        }
    }
    assert!(fast > 1_500 && left_to_library > 100, "fast path {fast}, left to tokenizers {left_to_library}");
}
