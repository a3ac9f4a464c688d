//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

pub mod broker;
pub mod browser;

use arrow_array::{Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The bundled demo sample: the project's own fixture stream.
pub const SAMPLE: &str = include_str!("../../demo/sample.jsonl");
/// Root of the sample's amplification campaign (see demo/README.md).
pub const CAMPAIGN_ROOT: &str = "x:1791207077972095700";

/// Messages that must each be dead-lettered, with the error kind expected in the header; the
/// oversized one carries a text of `large_text_bytes`.
pub fn bad_messages(large_text_bytes: usize) -> Vec<(&'static str, Vec<u8>)> {
    let good = |text: &str, time: &str| {
        format!(
            r#"{{"id":"x:bad-{time}","platform":"x","author":{{"id":"a","handle":"a"}},"created_at":"{time}","text":"{text}"}}"#
        )
    };
    vec![
        ("invalid_json", b"{\"id\": \"x:1\", \"text\": ".to_vec()),
        ("invalid_utf8", b"{\"id\":\"x:\xff\xfe\",\"platform\":\"x\"}".to_vec()),
        (
            "missing_field",
            br#"{"id":"x:nofields","platform":"x","created_at":"2026-11-01T09:00:00Z","text":"no author"}"#.to_vec(),
        ),
        ("too_large", good(&"a".repeat(large_text_bytes), "2026-11-01T09:00:01Z").into_bytes()),
        ("timestamp_out_of_range", good("from the far future", "3000-01-01T00:00:00Z").into_bytes()),
        ("empty_text", good("", "2026-11-01T09:00:02Z").into_bytes()),
    ]
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the API");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The visible files of a dataset directory, in every partition, sorted by path.
pub fn dataset_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        if entry.file_type().unwrap().is_dir() {
            files.extend(dataset_files(&entry.path()));
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    files
}

/// Every row of a dataset directory.
pub fn read_dataset(dir: &Path) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for path in dataset_files(dir) {
        assert!(path.extension().is_some_and(|e| e == "parquet"), "unexpected file {}", path.display());
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap().build().unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    batches
}

/// One string column of a dataset, all rows (nulls as `None`).
pub fn column(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(name).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..array.len()).map(move |i| array.is_valid(i).then(|| array.value(i).to_owned()))
        })
        .collect()
}

/// The ids of the sample's campaign posts according to demo/README.md's rule: posts by accounts created
/// within 7 days of posting with fewer than 20 followers, posted from the root's minute on.
pub fn sample_post_ids() -> Vec<String> {
    SAMPLE
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Kills a child process when dropped, so a failing test leaves no server behind.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `done` until it holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The shipped embedding model's folder.
pub fn model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
}

/// ONNX Runtime's library: `ORT_DYLIB_PATH`, or the one in the Python `onnxruntime` wheel. `None`
/// (the caller skips) when neither is there, unless `ECHOTRACE_E2E_REQUIRED=1`, where it panics.
pub fn onnxruntime_library() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from).filter(|p| p.is_file()).or_else(|| {
        let output = std::process::Command::new("python3")
            .args(["-c", "import onnxruntime, glob, os; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])"])
            .output()
            .ok()?;
        let path = String::from_utf8(output.stdout).ok()?.trim().to_owned();
        (output.status.success() && !path.is_empty()).then(|| path.into())
    });
    if found.is_none() {
        let required = std::env::var("ECHOTRACE_E2E_REQUIRED").is_ok_and(|v| v == "1");
        assert!(!required, "ONNX Runtime missing (pip install onnxruntime==1.31.1) and ECHOTRACE_E2E_REQUIRED=1");
        eprintln!("skipping: ONNX Runtime not installed (run scripts/setup)");
    }
    found
}

/// The shipped transformer with the default embedding settings; `None` (the caller skips) without
/// ONNX Runtime, as [`onnxruntime_library`] decides.
pub fn shipped_embedder() -> Option<echotrace::embed::Embedder> {
    let config = echotrace::embed::EmbedConfig {
        model_dir: model_dir(),
        runtime_library: Some(onnxruntime_library()?),
        ..echotrace::embed::EmbedConfig::default()
    };
    Some(echotrace::embed::Embedder::new(&config).expect("the shipped model loads"))
}

/// The log-odds of a probability: how far semantic decisions sit from their models' thresholds.
pub fn log_odds(probability: f32) -> f32 {
    (probability / (1.0 - probability)).ln()
}

/// Runs the `echotrace` binary built for these tests and waits for it.
pub fn echotrace(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_echotrace")).args(args).output().unwrap()
}

/// Replays the bundled sample with `echotrace replay` into `dir/out`; returns that directory.
pub fn replay_sample(dir: &Path) -> std::path::PathBuf {
    replay(dir, SAMPLE)
}

/// Replays `stream` (JSON lines) with `echotrace replay` into `dir/out`; returns that directory.
pub fn replay(dir: &Path, stream: &str) -> std::path::PathBuf {
    let input = dir.join("stream.jsonl");
    std::fs::write(&input, stream).unwrap();
    let data = dir.join("out");
    let replay = echotrace(&["replay", "--input", input.to_str().unwrap(), "--out", data.to_str().unwrap()]);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    data
}
