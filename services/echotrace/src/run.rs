//! `echotrace run` (and the detector half of `demo`): the consumer, the pipeline and the HTTP API,
//! wired together until shutdown.

use crate::alerting::{AlertDispatcher, AlertNotice};
use crate::config::Config;
use crate::http::{self, ApiState};
use crate::ingest;
use crate::ingest::lag::Ownership;
use crate::metrics::Metrics;
use crate::pipeline::Observer;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::KafkaPublisher;
use crate::sinks::parquet::ParquetSink;
use crate::state::StateStore;
use anyhow::Context;
use echotrace_core::detector::Detector;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A detector service that has started: its API address and the handles to wait on.
pub struct Running {
    /// Where the HTTP API listens.
    pub api_address: SocketAddr,
    /// The metrics it reports.
    pub metrics: Arc<Metrics>,
    /// The live detector (what the API reads).
    pub detector: Arc<Mutex<Detector>>,
    /// The consumer task; resolves when it has taken its last checkpoint.
    pub consumer: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The HTTP server task.
    pub server: tokio::task::JoinHandle<()>,
}

/// Restores the pipeline from the snapshot in `store`, when there is one it can use; returns the
/// alerts that were firing. A snapshot it cannot use is set aside with the reason, and the
/// pipeline starts empty.
fn resume(store: &StateStore, pipeline: &mut Pipeline) -> Vec<echotrace_core::score::alerts::AlertEvent> {
    let started = std::time::Instant::now();
    match store.read() {
        Ok(Some(snapshot)) => {
            let positions: Vec<String> =
                snapshot.positions.iter().map(|p| format!("{}/{}@{}", p.source, p.partition, p.offset)).collect();
            let window = snapshot.detector.window_len();
            let firing = pipeline.resume(snapshot);
            tracing::info!(
                snapshot = %store.path().display(),
                posts_in_window = window,
                alerts_firing = firing.len(),
                positions = %positions.join(","),
                seconds = started.elapsed().as_secs_f64(),
                "state restored"
            );
            firing
        }
        Ok(None) => {
            tracing::info!(snapshot = %store.path().display(), "no state snapshot yet: starting with an empty window");
            Vec::new()
        }
        Err(error) => {
            let aside = store.path().with_extension("refused");
            let moved = std::fs::rename(store.path(), &aside).is_ok();
            tracing::warn!(
                snapshot = %store.path().display(),
                %error,
                set_aside = %if moved { aside.display().to_string() } else { "no".to_owned() },
                "state snapshot refused: starting with an empty window"
            );
            Vec::new()
        }
    }
}

/// Starts the API and the consumer; both stop when `shutdown` fires.
pub async fn start(config: Config, observer: Option<Observer>, shutdown: Shutdown) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let detector = Arc::new(Mutex::new(Detector::new(config.detector.clone())));
    let ready = Arc::new(AtomicBool::new(false));
    let state = ApiState { detector: detector.clone(), metrics: metrics.clone(), ready: ready.clone() };
    let (api_address, server) = http::serve(config.http.listen, state, shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let sink = ParquetSink::new(&config.output.dir)?.with_embeddings(config.output.store_embeddings);
    let mut pipeline = crate::pipeline::from_config(&config, detector.clone(), sink, metrics.clone())?;
    if let Some(observer) = observer {
        pipeline = pipeline.with_observer(observer);
    }
    let publisher = KafkaPublisher::new(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(Duration::from_secs(10)).context("cannot confirm that the output topics exist")?;
    let store = StateStore::from_config(&config).context("cannot create the state folder (state.dir)")?;
    let firing = match &store {
        Some(store) => resume(store, &mut pipeline),
        None => Vec::new(),
    };
    let ownership = Arc::new(Mutex::new(Ownership::default()));
    let consumer = ingest::consumer(&config, metrics.clone(), ready, ownership.clone())
        .context("cannot create the Kafka consumer")?;
    tracing::info!(brokers = %config.kafka.brokers, topics = ?config.kafka.input_topics, api = %api_address, out = %config.output.dir.display(), "consuming");
    let (notices, dispatcher) = if config.alerting.alertmanager_url.is_empty() {
        (None, None)
    } else {
        let public_url = match config.alerting.public_url.as_str() {
            "" => format!("http://{api_address}"),
            url => url.to_owned(),
        };
        let resend = Duration::from_millis(config.alerting.resend_interval_ms.max(100));
        let dispatcher = AlertDispatcher::new(&config.alerting.alertmanager_url, &public_url, resend, metrics.clone());
        let (sender, receiver) = mpsc::channel(1024);
        (Some(sender), Some(tokio::spawn(dispatcher.run(receiver))))
    };
    // Alerts firing when the state was saved go on being sent, with their first startsAt: the
    // same alert to Alertmanager, not a new page.
    if let Some(notices) = &notices {
        for event in firing {
            notices.send(AlertNotice { event, produced_at: None }).await.context("the dispatcher stopped")?;
        }
    }
    let task_metrics = metrics.clone();
    let consumer = tokio::spawn(async move {
        let outlets = ingest::Outlets {
            publisher: &publisher,
            alert_notices: notices.as_ref(),
            state: store.as_ref(),
            ownership: &ownership,
        };
        let outcome = ingest::consume(&config, &consumer, outlets, &mut pipeline, &task_metrics, shutdown).await;
        // Closing the channel lets the dispatcher deliver what is pending and stop.
        drop(notices);
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        outcome?;
        Ok(())
    });
    Ok(Running { api_address, metrics, detector, consumer, server })
}
