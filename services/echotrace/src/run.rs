//! `echotrace run` (and the detector half of `demo`): the consumer, the pipeline and the HTTP API,
//! wired together until shutdown.

use crate::alerting::{AlertDispatcher, AlertNotice};
use crate::config::{Config, StageRole};
use crate::explorer::ExplorerState;
use crate::http::{self, ApiState};
use crate::ingest;
use crate::ingest::checkpoint::{Outlets, Progress};
use crate::ingest::lag::{Ownership, Partition};
use crate::ingest::ordering::{InputLayout, PartitionOrder};
use crate::metrics::Metrics;
use crate::pipeline::Observer;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::KafkaPublisher;
use crate::sinks::parquet::ParquetSink;
use crate::state::StateStore;
use anyhow::Context;
use echotrace_core::detector::Detector;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// What a start-up rebuilt: the alerts firing, and the partitions whose window it holds with the
/// offsets it holds them up to (`None`: all, nothing is rebuilt when a partition is assigned).
type StartingWindow = (Vec<echotrace_core::score::alerts::AlertEvent>, Option<BTreeMap<Partition, i64>>);

/// Rebuilds the window from Kafka (see [`ingest::rebuild`]) when `state.rebuild_from_kafka`;
/// returns the alerts firing after it and the partitions it read.
async fn rebuild(config: &Config, pipeline: &mut Pipeline, metrics: &Metrics) -> anyhow::Result<StartingWindow> {
    if !config.state.rebuild_from_kafka {
        tracing::info!("no state restored and state.rebuild_from_kafka is off: starting with an empty window");
        return Ok((Vec::new(), None));
    }
    let started = std::time::Instant::now();
    let rebuilt = ingest::rebuild::rebuild_window(config, pipeline, None)
        .await
        .context("cannot rebuild the window from Kafka")?;
    metrics.window_rebuilds.inc_by(rebuilt.partitions.len() as u64);
    if rebuilt.partitions.is_empty() {
        tracing::info!("nothing committed yet: starting with an empty window");
    } else if rebuilt.complete {
        tracing::info!(
            posts = rebuilt.posts,
            partitions = rebuilt.partitions.len(),
            seconds = started.elapsed().as_secs_f64(),
            "window rebuilt from Kafka"
        );
    } else {
        tracing::warn!(
            posts = rebuilt.posts,
            partitions = rebuilt.partitions.len(),
            timeout_secs = config.state.rebuild_timeout_secs,
            "window rebuilt only in part: state.rebuild_timeout_secs passed"
        );
    }
    Ok((pipeline.firing_alerts(), Some(rebuilt.held)))
}

/// Starts the API and the consumer; both stop when `shutdown` fires.
pub async fn start(config: Config, observer: Option<Observer>, shutdown: Shutdown) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let detector = if config.links_over_kafka() {
        Detector::answered_elsewhere(config.detector.clone())
    } else {
        Detector::new(config.detector.clone())
    };
    let detector = Arc::new(Mutex::new(detector));
    let ready = Arc::new(AtomicBool::new(false));
    let sink = ParquetSink::new(&config.output.dir)?.with_embeddings(config.output.store_embeddings);
    let explorer = Arc::new(ExplorerState::from_config(&config)?);
    let state = ApiState {
        detector: detector.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        explorer: explorer.clone(),
    };
    let token = config.http.token()?;
    let (api_address, server) = http::serve(config.http.listen, state, token, shutdown.clone()).await?;
    let mut pipeline = crate::pipeline::from_config(&config, detector.clone(), sink, metrics.clone())?
        .with_alert_board(explorer.alerts.clone());
    if let Some(observer) = observer {
        pipeline = pipeline.with_observer(observer);
    }
    let publisher = KafkaPublisher::new(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(Duration::from_secs(10)).context("cannot confirm that the output topics exist")?;
    let order_layout = match config.stage.role {
        StageRole::Detect => InputLayout::fetch_prepared(&config, &publisher, Duration::from_secs(10))
            .context("the detect stage orders posts by their input partitions")?,
        StageRole::Whole | StageRole::Prepare | StageRole::Link | StageRole::Score | StageRole::Gate => {
            InputLayout::Input
        }
    };
    let store = StateStore::from_config(&config).context("cannot create the state folder (state.dir)")?;
    if config.scores_over_kafka() {
        // The owners pass over records by the router's post numbers, which only a snapshot keeps
        // across a restart: a window rebuilt from Kafka would number its posts again from one.
        anyhow::ensure!(
            store.is_some(),
            "stage.score_stage needs state snapshots (state.dir): the owners of cascades take the scorer's records by \
             post numbers that only a snapshot keeps across restarts"
        );
        crate::stages::score::check_partitions(&publisher, &config)?;
    }
    let (firing, held) = match &store {
        // The snapshot is taken over when the group assigns partitions (`Progress::take_over`):
        // a member that stands by while another owns them restores the state that one left.
        Some(store) => {
            tracing::info!(snapshot = %store.path().display(), "state restored when the group assigns partitions");
            (Vec::new(), Some(BTreeMap::new()))
        }
        None => rebuild(&config, &mut pipeline, &metrics).await?,
    };
    let held = held.filter(|_| store.is_some() || config.state.rebuild_from_kafka);
    let ownership = Arc::new(Mutex::new(Ownership::holding(held)));
    let consumer = Arc::new(
        ingest::consumer(&config, metrics.clone(), ready, ownership.clone())
            .context("cannot create the Kafka consumer")?,
    );
    let topics = crate::stages::InputDecoder::topics(&config);
    tracing::info!(brokers = %config.kafka.brokers, topics = ?topics, role = ?config.stage.role, api = %api_address, out = %config.output.dir.display(), "consuming");
    let (notices, dispatcher) = AlertDispatcher::start(&config, api_address, metrics.clone()).unzip();
    // Alerts firing when the state was saved go on being sent, with their first startsAt: the
    // same alert to Alertmanager, not a new page.
    if let Some(notices) = &notices {
        for event in firing {
            notices.send(AlertNotice { event, produced_at: None }).await.context("the dispatcher stopped")?;
        }
    }
    let task_metrics = metrics.clone();
    let decoder = crate::stages::InputDecoder::new(&config);
    let owner_records = config.scores_over_kafka().then(|| crate::stages::score::OwnerRecords::new(&config));
    let outlets = Outlets { publisher, state: store, dispatches_alerts: notices.is_some(), decoder, owner_records };
    let order = PartitionOrder::new(order_layout, &config, metrics.clone());
    let progress =
        Progress::new(pipeline, outlets, order, metrics.clone(), ownership, config.state.snapshot_interval());
    let consumer = tokio::spawn(async move {
        let progress = Arc::new(tokio::sync::Mutex::new(progress));
        let outcome = ingest::consume(&config, &consumer, progress, notices.as_ref(), &task_metrics, shutdown).await;
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
