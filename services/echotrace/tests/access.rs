//! Who gets into the HTTP API, and what a hostile client can hold: every endpoint without a token,
//! with a wrong one and with the right one; an address beyond loopback without a token; an
//! oversized request head and an oversized body; a client that sends its head slowly; and more
//! connections than the API keeps open.

use echotrace::http::{ApiState, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, ServeError, serve};
use echotrace::metrics::Metrics;
use echotrace_core::detector::{Detector, DetectorConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-token";

fn state() -> ApiState {
    let mut config = echotrace::config::Config::default();
    config.output.dir = tempfile::tempdir().unwrap().keep();
    ApiState {
        detector: Arc::new(Mutex::new(Detector::new(DetectorConfig::default()))),
        metrics: Arc::new(Metrics::new()),
        ready: Arc::new(AtomicBool::new(true)),
        explorer: Arc::new(echotrace::explorer::ExplorerState::from_config(&config).unwrap()),
    }
}

/// Sends `head` (and nothing more) and reads the answer until the server closes; returns the
/// status (0 when the server closed without answering) and the whole answer.
fn exchange(address: SocketAddr, head: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The server may answer and close before it has read all of an oversized head.
    let _ = stream.write_all(head);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn get(address: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let credentials = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
    exchange(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: echotrace\r\nConnection: close\r\n{credentials}\r\n").as_bytes(),
    )
}

async fn start(token: Option<&str>) -> (SocketAddr, echotrace::shutdown::ShutdownTrigger, tokio::task::JoinHandle<()>) {
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let (address, server) =
        serve("127.0.0.1:0".parse().unwrap(), state(), token.map(str::to_owned), shutdown).await.unwrap();
    (address, trigger, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_the_probes_requires_the_token() {
    let (address, trigger, server) = start(Some(TOKEN)).await;
    let answers = tokio::task::spawn_blocking(move || {
        let mut answers = Vec::new();
        for path in
            ["/metrics", "/cascades", "/cascades/c-1", "/posts/x:1/lineage", "/alerts", "/alerts/a-1", "/reviews"]
        {
            let without = get(address, path, None);
            let wrong = get(address, path, Some("Bearer not-the-token"));
            let basic_wrong = get(address, path, Some("Basic YW5hbHlzdDpub3BlCg=="));
            let right = get(address, path, Some(&format!("Bearer {TOKEN}")));
            assert!(!without.1.contains(TOKEN) && !wrong.1.contains(TOKEN), "the token never echoes");
            answers.push((path, without.0, wrong.0, basic_wrong.0, right.0));
        }
        // The explorer's page and assets hold no data.
        for path in ["/healthz", "/readyz", "/", "/view/cascades/c-1", "/assets/explorer.js"] {
            answers.push((path, get(address, path, None).0, 0, 0, 0));
        }
        answers
    })
    .await
    .unwrap();
    assert_eq!(
        answers,
        [
            ("/metrics", 401, 401, 401, 200),
            ("/cascades", 401, 401, 401, 200),
            ("/cascades/c-1", 401, 401, 401, 404),
            ("/posts/x:1/lineage", 401, 401, 401, 404),
            ("/alerts", 401, 401, 401, 200),
            ("/alerts/a-1", 401, 401, 401, 404),
            ("/reviews", 401, 401, 401, 200),
            ("/healthz", 200, 0, 0, 0),
            ("/readyz", 200, 0, 0, 0),
            ("/", 200, 0, 0, 0),
            ("/view/cascades/c-1", 200, 0, 0, 0),
            ("/assets/explorer.js", 200, 0, 0, 0),
        ]
    );
    trigger.fire();
    server.await.unwrap();
}

#[tokio::test]
async fn beyond_loopback_it_refuses_to_start_without_a_token() {
    let (_trigger, shutdown) = echotrace::shutdown::channel();
    let refused = serve("0.0.0.0:0".parse().unwrap(), state(), None, shutdown.clone()).await;
    let Err(ServeError::Access(error)) = refused else { panic!("started beyond loopback without a token") };
    assert!(error.to_string().contains("http.token"), "{error}");
    assert!(serve("0.0.0.0:0".parse().unwrap(), state(), Some(TOKEN.into()), shutdown).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_the_api_stays_up() {
    let (address, trigger, server) = start(None).await;
    let statuses = tokio::task::spawn_blocking(move || {
        let huge_header = format!("GET /metrics HTTP/1.1\r\nHost: e\r\nX-Padding: {}\r\n\r\n", "a".repeat(1 << 20));
        let head = exchange(address, huge_header.as_bytes()).0;
        // A body of 10 MB announced: answered at once, without waiting for (or reading) it.
        let body = exchange(address, b"POST /cascades HTTP/1.1\r\nHost: e\r\nContent-Length: 10485760\r\n\r\n").0;
        (head, body, get(address, "/metrics", None).0)
    })
    .await
    .unwrap();
    assert_eq!(statuses, (431, 405, 200), "head too large, no such method, and still serving");
    trigger.fire();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_cannot_hold_every_connection() {
    let (address, trigger, server) = start(None).await;
    tokio::task::spawn_blocking(move || {
        // As many connections as the API keeps, each sending half a request head and stalling.
        let stalled: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let mut stream = TcpStream::connect(address).unwrap();
                stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // One more is closed at once, unanswered.
        let (status, answer) = get(address, "/metrics", None);
        assert_eq!((status, answer.as_str()), (0, ""), "a connection past the limit is closed");
        // The stalled ones are cut off after the header-read timeout, and the API serves again.
        let started = Instant::now();
        for mut stream in stalled {
            stream.set_read_timeout(Some(HEADER_READ_TIMEOUT * 3)).unwrap();
            let mut rest = Vec::new();
            assert!(stream.read_to_end(&mut rest).is_ok(), "closed by the server, not timed out here");
        }
        let waited = started.elapsed();
        assert!(waited < HEADER_READ_TIMEOUT + Duration::from_secs(5), "cut off after {waited:?}");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(get(address, "/metrics", None).0, 200);
    })
    .await
    .unwrap();
    trigger.fire();
    server.await.unwrap();
}
