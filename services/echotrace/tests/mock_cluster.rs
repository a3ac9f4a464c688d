//! The consumer against librdkafka's in-process mock cluster: the sample stream and every kind of bad
//! input go in; cascades, Parquet files, dead letters, edges and committed offsets come out. The
//! last test gives the `prepare` stage refused produce requests.

mod common;

use common::*;
use echotrace::config::Config;
use echotrace::sinks::kafka::{ERROR_KIND_HEADER, SOURCE_HEADER};
use echotrace::stages::prepared::{self, PreparedSettings, Received};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const POSTS: &str = "posts";

/// `max.in.flight.requests.per.connection` for the tests that refuse produce requests. The mock
/// cluster checks the sequence numbers of idempotent producers only for transactional ones: a
/// request sent behind a refused one is accepted, and librdkafka takes its success as proof that
/// the refused one was stored, which it was not (a real broker refuses the later request as out of
/// sequence, and both are sent again in order). One request at a time keeps the mock honest.
const ONE_REQUEST_IN_FLIGHT: &str = "1";

/// A consumer's configuration against `cluster`, with the topics created (2 partitions each),
/// writing under `out`, a snapshot and a commit at every checkpoint; and a producer for the input.
fn mock_setup(
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    out: &std::path::Path,
) -> (Config, FutureProducer) {
    let mut config = Config::default();
    for topic in [POSTS, &config.kafka.dead_letter_topic, &config.kafka.edges_topic, &config.kafka.alerts_topic] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.input_topics = vec![POSTS.into()];
    config.kafka.properties.insert("session.timeout.ms".into(), "6000".into());
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.output.dir = out.to_owned();
    config.output.flush_interval_ms = 200;
    config.state.dir = out.join("state");
    config.state.snapshot_interval_secs = 0;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap();
    (config, producer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_links_dead_letters_and_commits() {
    let cluster = MockCluster::new(1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (config, producer) = mock_setup(&cluster, out.path());

    // The sample, a duplicate delivery, and each bad input in between.
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
    assert_eq!(committed_behind_end(&config), 0, "every partition committed to its end");
}

/// Errors injected on the mock cluster. Commits refused by the coordinator are retried at the next
/// checkpoint; produce errors the client retries by itself cost nothing; a dead letter or edge that
/// cannot be delivered stops the consumer before it commits what produced it, and the next start
/// delivers it: nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_commit_errors_are_retried_or_stop_before_committing() {
    let cluster = MockCluster::new(1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (mut config, producer) = mock_setup(&cluster, out.path());
    config.kafka.properties.insert("max.in.flight.requests.per.connection".into(), ONE_REQUEST_IN_FLIGHT.into());
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let bad = bad_messages(1024 * 1024);
    let (first, second) = lines.split_at(lines.len() / 2);
    let (first_bad, second_bad) = bad.split_at(bad.len() / 2);

    // First half: three refused commits and three retriable produce errors.
    for payload in first_bad.iter().map(|(_, p)| p.as_slice()).chain(first.iter().map(|l| l.as_bytes())) {
        send(&producer, payload).await;
    }
    cluster
        .request_errors(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3]);
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3]);
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
    wait_until_committed(&config, &running).await;
    let failures = running.metrics.commit_failures.get();
    assert!(failures >= 3, "{failures} commit failures counted, 3 injected");
    trigger.fire();
    running.consumer.await.unwrap().unwrap();
    running.server.await.unwrap();
    assert_eq!(dead_letter_payloads(&config, first_bad.len()), payloads(first_bad));

    // Second half: every produce fails for good. The consumer stops with the error and the
    // offsets of what it read stay uncommitted.
    let before = committed_behind_end(&config);
    for payload in second_bad.iter().map(|(_, p)| p.as_slice()).chain(second.iter().map(|l| l.as_bytes())) {
        send(&producer, payload).await;
    }
    let produced_second = (second_bad.len() + second.len()) as i64;
    assert_eq!(committed_behind_end(&config), before + produced_second);
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 64]);
    let (_trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(120), running.consumer)
        .await
        .expect("the consumer goes on although its deliveries fail")
        .unwrap();
    let error = outcome.expect_err("a delivery failed for good and the consumer went on");
    assert!(error.to_string().contains("not delivered"), "{error:#}");
    assert!(committed_behind_end(&config) > 0, "offsets committed although their outputs were not delivered");
    running.server.abort();

    // The next start, with the broker well again, delivers and commits it all.
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
    wait_until_committed(&config, &running).await;
    trigger.fire();
    running.consumer.await.unwrap().unwrap();
    running.server.await.unwrap();
    assert_eq!(dead_letter_payloads(&config, bad.len()), payloads(&bad), "every dead letter delivered");
    let posts = read_dataset(&out.path().join("posts"));
    let mut ids: Vec<_> = column(&posts, "post_id").into_iter().flatten().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), lines.len(), "every post stored");
}

/// The distinct payloads of `messages`, sorted.
fn payloads(messages: &[(&str, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut payloads: Vec<Vec<u8>> = messages.iter().map(|(_, p)| p.clone()).collect();
    payloads.sort();
    payloads.dedup();
    payloads
}

/// The distinct payloads on the dead-letter topic (at least `want` read), sorted.
fn dead_letter_payloads(config: &Config, want: usize) -> Vec<Vec<u8>> {
    let mut payloads: Vec<Vec<u8>> = read_topic(&config.kafka.brokers, &config.kafka.dead_letter_topic, want)
        .into_iter()
        .map(|(_, payload, _)| payload)
        .collect();
    payloads.sort();
    payloads.dedup();
    payloads
}

/// How many messages of the input topic lie past the consumer's group's committed offsets, over
/// both partitions (a partition never committed counts from its start).
fn committed_behind_end(config: &Config) -> i64 {
    group_behind_end(config, &config.kafka.group_id)
}

/// How many messages of the input topic lie past `group`'s committed offsets, over both
/// partitions.
fn group_behind_end(config: &Config, group: &str) -> i64 {
    let verifier: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).set("group.id", group).create().unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(POSTS, 0);
    list.add_partition(POSTS, 1);
    let committed = verifier.committed_offsets(list, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .map(|element| {
            let (low, high) = verifier.fetch_watermarks(POSTS, element.partition(), Duration::from_secs(10)).unwrap();
            match element.offset() {
                Offset::Offset(offset) => high - offset,
                _ => high - low,
            }
        })
        .sum()
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
    // Assigned rather than subscribed: no group to join, every read starts at the beginning.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("verify-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        partitions.add_partition_offset(topic, partition.id(), Offset::Beginning).unwrap();
    }
    consumer.assign(&partitions).unwrap();
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

/// A snapshot that cannot be used (here: corrupted) is refused and set aside, and the window is
/// rebuilt by reading the posts before the committed offsets again with the sinks muted: the
/// campaign that straddles the restart stays one cascade, and no row is written twice. The same
/// restart without the rebuild splits it, so the comparison shows what the rebuild restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_snapshot_rebuilds_the_window_from_kafka() {
    let lines: Vec<&str> = SAMPLE.lines().collect();
    // The campaign runs from line 159 to about line 300 of the sample.
    let (before, after) = lines.split_at(200);
    let mut campaign_sizes = Vec::new();
    for rebuild in [true, false] {
        let cluster = MockCluster::new(1).unwrap();
        let out = tempfile::tempdir().unwrap();
        let (mut config, producer) = mock_setup(&cluster, out.path());
        config.state.rebuild_from_kafka = rebuild;
        for line in before {
            send(&producer, line.as_bytes()).await;
        }
        run_until_committed(&config).await;

        std::fs::write(config.state.dir.join("snapshot.bin"), b"ETSTATE\0 torn by the test").unwrap();
        for line in after {
            send(&producer, line.as_bytes()).await;
        }
        let (trigger, shutdown) = echotrace::shutdown::channel();
        let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
        wait_until_committed(&config, &running).await;
        let top = top_cascade(running.api_address).await;
        trigger.fire();
        running.consumer.await.unwrap().unwrap();
        running.server.await.unwrap();

        assert!(config.state.dir.join("snapshot.refused").exists(), "the refused snapshot is set aside");
        campaign_sizes.push(top);
        // Muted: the rebuild wrote no row; every post once.
        let posts = read_dataset(&out.path().join("posts"));
        let ids: Vec<_> = column(&posts, "post_id").into_iter().flatten().collect();
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!((ids.len(), distinct.len()), (lines.len(), lines.len()), "rebuild {rebuild}");
    }
    assert_rebuild_keeps_the_campaign(&campaign_sizes);
}

/// The largest cascade an instance's API lists: (root post id, size).
async fn top_cascade(address: std::net::SocketAddr) -> (String, u64) {
    let (_, body) = tokio::task::spawn_blocking(move || http_get(address, "/cascades?top=1")).await.unwrap();
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    (top[0]["root_post_id"].as_str().unwrap().to_owned(), top[0]["size"].as_u64().unwrap())
}

/// The top cascades with the rebuild on, then off: with it the campaign is whole (rooted at its
/// root, 35 posts or more), without it smaller.
fn assert_rebuild_keeps_the_campaign(top_with_and_without: &[(String, u64)]) {
    let (rebuilt_root, rebuilt_size) = &top_with_and_without[0];
    assert_eq!(rebuilt_root, CAMPAIGN_ROOT, "{top_with_and_without:?}");
    assert!(*rebuilt_size >= 35, "the rebuilt window keeps the campaign whole: {top_with_and_without:?}");
    let (_, split_size) = &top_with_and_without[1];
    assert!(split_size < rebuilt_size, "without the rebuild the campaign splits: {top_with_and_without:?}");
}

/// Runs an instance until the group has committed every message of the input, then stops it.
async fn run_until_committed(config: &Config) {
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
    wait_until_committed(config, &running).await;
    trigger.fire();
    running.consumer.await.unwrap().unwrap();
    running.server.await.unwrap();
}

/// Waits until the consumer's group has committed every message of the input.
async fn wait_until_committed(config: &Config, running: &echotrace::run::Running) {
    wait_until_group_committed(config, &config.kafka.group_id, &running.consumer).await;
}

/// Waits until `group` has committed every message of the input, failing if `consumer` stops
/// first or a minute passes.
async fn wait_until_group_committed(config: &Config, group: &str, consumer: &JoinHandle<anyhow::Result<()>>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while group_behind_end(config, group) > 0 {
        assert!(!consumer.is_finished(), "the consumer stopped before the input was committed");
        assert!(Instant::now() < deadline, "the input was never committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A partition handed over in a rebalance arrives with its window: two instances share the input,
/// a partition each, one leaves, and the one left pauses the partition it receives, reads its window before the
/// committed offset again (muted) and resumes it, so the campaign spread over both partitions is
/// one cascade on the instance left. Without the rebuild, it is split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_handed_over_arrives_with_its_window() {
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let (before, after) = lines.split_at(200);
    let mut campaign_sizes = Vec::new();
    for rebuild in [true, false] {
        let cluster = MockCluster::new(1).unwrap();
        let out = tempfile::tempdir().unwrap();
        let (mut config, producer) = mock_setup(&cluster, out.path());
        config.state.rebuild_from_kafka = rebuild;
        let mut second = config.clone();
        second.state.dir = out.path().join("state-second");
        let (stay_trigger, shutdown) = echotrace::shutdown::channel();
        let staying = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
        let (leave_trigger, shutdown) = echotrace::shutdown::channel();
        let leaving = echotrace::run::start(second, None, shutdown).await.unwrap();
        // The input goes in once the group has settled, one partition each, so each instance
        // reads half of the campaign.
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = |address| http_get(address, "/readyz").0 == 200;
        let mut settled = 0;
        while settled < 3 {
            assert!(Instant::now() < deadline, "the group never settled");
            settled = if ready(staying.api_address) && ready(leaving.api_address) { settled + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (i, line) in before.iter().enumerate() {
            send_to(&producer, line.as_bytes(), i as i32 % 2).await;
        }
        while committed_behind_end(&config) > 0
            || staying.metrics.messages_consumed.get() == 0
            || leaving.metrics.messages_consumed.get() == 0
        {
            assert!(Instant::now() < deadline, "the two instances never shared and committed the input");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        leave_trigger.fire();
        leaving.consumer.await.unwrap().unwrap();
        leaving.server.await.unwrap();

        for (i, line) in after.iter().enumerate() {
            send_to(&producer, line.as_bytes(), i as i32 % 2).await;
        }
        wait_until_committed(&config, &staying).await;
        campaign_sizes.push(top_cascade(staying.api_address).await);
        stay_trigger.fire();
        staying.consumer.await.unwrap().unwrap();
        staying.server.await.unwrap();
    }
    assert_rebuild_keeps_the_campaign(&campaign_sizes);
}

async fn send_to(producer: &FutureProducer, payload: &[u8], partition: i32) {
    producer
        .send(FutureRecord::<(), [u8]>::to(POSTS).payload(payload).partition(partition), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A post dated a day past its message's timestamp (a skewed or hostile source) moves event time
/// only to that timestamp plus the allowed lead: it is stored and counted, and the copy that
/// follows still finds its original in the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_dated_a_day_ahead_of_its_message_evicts_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (mut config, producer) = mock_setup(&cluster, out.path());
    config.detector.semantic.enabled = false;
    let now = chrono::Utc::now();
    let claim = "maintainer dana whitlock secretly rejected the safety patches for the parser library";
    let posts = [
        ("x:original", now, claim),
        ("x:ahead", now + chrono::Duration::hours(23), "an unrelated post dated most of a day ahead of now"),
        ("bluesky:copy", now + chrono::Duration::minutes(1), claim),
    ];
    for (id, created_at, text) in posts {
        let json = format!(
            r#"{{"id":"{id}","platform":"{}","author":{{"id":"a-{id}","handle":"h"}},"created_at":"{}","text":"{text}"}}"#,
            id.split(':').next().unwrap(),
            created_at.to_rfc3339()
        );
        // The message's timestamp is when the post reached the pipeline: now, for all three.
        let record =
            FutureRecord::<(), [u8]>::to(POSTS).payload(json.as_bytes()).partition(0).timestamp(now.timestamp_millis());
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
    wait_until_committed(&config, &running).await;
    assert_eq!(running.metrics.posts_ahead.get(), 1);
    trigger.fire();
    running.consumer.await.unwrap().unwrap();
    running.server.await.unwrap();
    let rows = read_dataset(&out.path().join("posts"));
    let parents: HashMap<String, Option<String>> =
        column(&rows, "post_id").into_iter().flatten().zip(column(&rows, "parent_id")).collect();
    assert_eq!(parents.len(), 3, "every post stored: {parents:?}");
    assert_eq!(parents["bluesky:copy"].as_deref(), Some("x:original"), "{parents:?}");
}

/// The `prepare` stage when the brokers refuse its produce requests: refusals the producer may
/// retry are retried, and one for good stops the stage before it commits what it read, so the next
/// start prepares it again. Whatever was refused, each input partition's posts reach the prepared
/// topic in the partition's order, each at least once: the `detect` stage drops a second copy by
/// post id and links posts in the order they come. Without librdkafka's gapless guarantee
/// (`KafkaPublisher::keeping_order`), the batches sent behind the refused one were delivered
/// ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prepare_stage_keeps_each_partitions_order_through_refused_produce_requests() {
    let cluster = MockCluster::new(1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (mut config, producer) = mock_setup(&cluster, out.path());
    cluster.create_topic(&config.kafka.prepared_topic, 2, 1).unwrap();
    config.detector.semantic.enabled = false;
    // Batches of four sent at once: a refused request has others behind it.
    config.embed.batch_size = 4;
    config.kafka.properties.insert("linger.ms".into(), "0".into());
    config.kafka.properties.insert("max.in.flight.requests.per.connection".into(), ONE_REQUEST_IN_FLIGHT.into());
    let group = echotrace::stages::prepare::group_id(&config);
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);

    // First half: three refusals the producer retries.
    for line in first {
        send(&producer, line.as_bytes()).await;
    }
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3]);
    prepare_until_committed(&config, &group).await;

    // Second half: the first two requests refused for good, the rest accepted. The stage stops
    // with the error, and what it read stays uncommitted.
    for line in second {
        send(&producer, line.as_bytes()).await;
    }
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 2]);
    let (_trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::stages::prepare::start(config.clone(), shutdown).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(120), running.consumer)
        .await
        .expect("the stage goes on although a delivery failed for good")
        .unwrap();
    let error = outcome.expect_err("a delivery failed for good and the stage went on");
    assert!(format!("{error:#}").contains("offsets not committed"), "{error:#}");
    assert!(group_behind_end(&config, &group) > 0, "offsets committed although their posts were not delivered");
    running.server.abort();

    // The next start, with the brokers well again, sends and commits the rest.
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    prepare_until_committed(&config, &group).await;

    let settings = PreparedSettings::of(&config);
    for partition in 0..2 {
        let input: Vec<String> = partition_payloads(&config.kafka.brokers, POSTS, partition)
            .iter()
            .map(|payload| {
                serde_json::from_slice::<serde_json::Value>(payload).unwrap()["id"].as_str().unwrap().to_owned()
            })
            .collect();
        let mut prepared: Vec<String> = Vec::new();
        for payload in partition_payloads(&config.kafka.brokers, &config.kafka.prepared_topic, partition) {
            match prepared::decode(&payload, &settings).unwrap() {
                Received::Prepared(post, _, _) => prepared.push(post.post.id.clone()),
                Received::Idle(..) => {}
                Received::Foreign(post, _) => panic!("{} prepared with other settings", post.id),
            }
        }
        let mut seen = std::collections::HashSet::new();
        prepared.retain(|id| seen.insert(id.clone()));
        let first_difference = prepared.iter().zip(&input).position(|(prepared, input)| prepared != input);
        assert!(
            prepared == input,
            "partition {partition}: the prepared posts' first copies ({}) differ from the input ({}) at \
             {first_difference:?}: {:?} against {:?}",
            prepared.len(),
            input.len(),
            prepared.iter().skip(first_difference.unwrap_or(0)).take(4).collect::<Vec<_>>(),
            input.iter().skip(first_difference.unwrap_or(0)).take(4).collect::<Vec<_>>(),
        );
    }
}

/// Runs the `prepare` stage until `group` has committed the whole input, then stops it.
async fn prepare_until_committed(config: &Config, group: &str) {
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::stages::prepare::start(config.clone(), shutdown).await.unwrap();
    wait_until_group_committed(config, group, &running.consumer).await;
    trigger.fire();
    running.consumer.await.unwrap().unwrap();
    running.server.await.unwrap();
}

/// Every message's payload on one partition of `topic`, from its start to its end now.
fn partition_payloads(brokers: &str, topic: &str, partition: i32) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("verify-{topic}-{partition}"))
        .set("enable.partition.eof", "true")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut payloads = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(10)).expect("the partition answers") {
            Ok(message) => payloads.push(message.payload().unwrap_or_default().to_vec()),
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => return payloads,
            Err(error) => panic!("reading {topic}/{partition}: {error}"),
        }
    }
}
