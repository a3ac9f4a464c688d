//! The consumer against librdkafka's in-process mock cluster: the sample stream and every kind of bad
//! input go in; cascades, Parquet files, dead letters, edges and committed offsets come out.

mod common;

use common::*;
use echotrace::config::Config;
use echotrace::sinks::kafka::{ERROR_KIND_HEADER, SOURCE_HEADER};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const POSTS: &str = "posts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_links_dead_letters_and_commits() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = Config::default();
    for topic in [POSTS, &config.kafka.dead_letter_topic, &config.kafka.edges_topic, &config.kafka.alerts_topic] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.input_topics = vec![POSTS.into()];
    config.kafka.properties.insert("session.timeout.ms".into(), "6000".into());
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.output.dir = out.path().to_owned();
    config.output.flush_interval_ms = 200;
    // A snapshot, and a commit, at every checkpoint.
    config.state.dir = out.path().join("state");
    config.state.snapshot_interval_secs = 0;

    // The sample, a duplicate delivery, and each bad input in between.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap();
    let lines: Vec<&str> = SAMPLE.lines().collect();
    // librdkafka's mock broker stalls the partition on a 10 MB message (the real broker in
    // broker_e2e.rs takes one); 1 MB is still four times the text limit.
    let bad = bad_messages(1024 * 1024);
    let mut produced = 0u64;
    for (i, line) in lines.iter().enumerate() {
        if i % 50 == 7 && i / 50 < bad.len() {
            send(&producer, &bad[i / 50].1).await;
            produced += 1;
        }
        send(&producer, line.as_bytes()).await;
        produced += 1;
    }
    send(&producer, lines[10].as_bytes()).await;
    produced += 1;

    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Settled, not just consumed: the last posts may still wait for their embedding batch.
    while running.metrics.messages_settled() < produced {
        assert!(!running.consumer.is_finished(), "consumer stopped early: {:?}", running.consumer.await);
        assert!(Instant::now() < deadline, "settled only {} of {produced}", running.metrics.messages_settled());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let address = running.api_address;

    // The campaign is one cascade across its platforms, reachable through the API.
    let (status, body) = tokio::task::spawn_blocking(move || http_get(address, "/cascades?top=1")).await.unwrap();
    assert_eq!(status, 200);
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top[0]["root_post_id"], CAMPAIGN_ROOT, "{body}");
    assert!(top[0]["size"].as_u64().unwrap() >= 35, "{body}");
    assert_eq!(top[0]["platforms"].as_array().unwrap().len(), 4, "{body}");
    let cascade_id = top[0]["cascade_id"].as_str().unwrap().to_owned();
    let (status, view) =
        tokio::task::spawn_blocking(move || http_get(address, &format!("/cascades/{cascade_id}"))).await.unwrap();
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert!(view["edges"].as_array().unwrap().iter().any(|e| e["kind"] == "near_duplicate"));
    assert!(view["edges"].as_array().unwrap().iter().any(|e| e["kind"] == "shared_url"));
    let (status, _) = tokio::task::spawn_blocking(move || http_get(address, "/cascades/nope")).await.unwrap();
    assert_eq!(status, 404);
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(address, "/metrics")).await.unwrap();
    assert!(metrics.contains("echotrace_dead_letters_total{reason=\"too_large\"} 1"), "{metrics}");
    assert!(metrics.contains("echotrace_posts_duplicate_total 1"), "{metrics}");

    trigger.fire();
    running.consumer.await.unwrap().unwrap();
    running.server.await.unwrap();

    // Parquet: one row per distinct good post, nothing half-written.
    let posts = read_dataset(&out.path().join("posts"));
    let ids = column(&posts, "post_id");
    assert_eq!(ids.len(), lines.len());
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), lines.len(), "a duplicate delivery yields one row");

    // Dead letters: each bad input once, with its reason, original bytes intact.
    let dead = read_topic(&config.kafka.brokers, &config.kafka.dead_letter_topic, bad.len());
    assert_eq!(dead.len(), bad.len());
    for (kind, original) in &bad {
        let letter = dead.iter().find(|(k, _, _)| k == kind).unwrap_or_else(|| panic!("no dead letter of kind {kind}"));
        assert_eq!(&letter.1, original, "original bytes of {kind} intact");
        assert!(letter.2.starts_with("posts/"), "source header {}", letter.2);
    }
    // Edges were published.
    assert!(!read_topic(&config.kafka.brokers, &config.kafka.edges_topic, 1).is_empty());

    // Offsets: committed to the end of every partition.
    let verifier: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .create()
        .unwrap();
    let mut committed_total = 0;
    {
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(POSTS, 0);
        list.add_partition(POSTS, 1);
        let committed = verifier.committed_offsets(list, Duration::from_secs(10)).unwrap();
        for element in committed.elements() {
            let (_, high) = verifier.fetch_watermarks(POSTS, element.partition(), Duration::from_secs(10)).unwrap();
            assert_eq!(
                element.offset(),
                Offset::Offset(high),
                "partition {} committed to its end",
                element.partition()
            );
            committed_total += high;
        }
    }
    assert_eq!(committed_total as u64, produced);
}

async fn send(producer: &FutureProducer, payload: &[u8]) {
    producer
        .send(FutureRecord::<(), [u8]>::to(POSTS).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Reads up to `want` messages from the start of a topic: (error kind header, payload, source header).
fn read_topic(brokers: &str, topic: &str, want: usize) -> Vec<(String, Vec<u8>, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("verify-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers: HashMap<String, String> = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                headers.get(ERROR_KIND_HEADER).cloned().unwrap_or_default(),
                message.payload().unwrap_or_default().to_vec(),
                headers.get(SOURCE_HEADER).cloned().unwrap_or_default(),
            ));
        }
    }
    out
}
