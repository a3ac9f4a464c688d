//! The cascade explorer in a real headless Chromium, asserting on the DOM:
//! - against a running `echotrace demo`: the campaign grows in the live list without a reload, is
//!   found there (filtered by rule, opened from the keyboard), its cascade's view shows the API's
//!   posts and edges and the chain of summaries, and exports them, an alert's link leads to the
//!   alert's view, a review without a reviewer's token is refused, and one with it is recorded and
//!   read back with `echotrace query`;
//! - against `echotrace run` on librdkafka's mock cluster: a cascade of 10,000 posts is drawn
//!   aggregated and stays usable; how long its view took to load is printed (a figure, not an
//!   assertion on speed).

mod common;

use common::broker::{free_http, metric, start_instance};
use common::browser::Browser;
use common::*;
use echotrace_core::detector::graph::cascade_id_for;
use fantoccini::Locator;
use fantoccini::key::Key;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `script` in the page and returns its value.
async fn run_script(browser: &Browser, script: &str) -> Value {
    browser.client.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// The page's posts and edges, as the graph draws them.
async fn drawn_graph(browser: &Browser) -> (BTreeSet<String>, BTreeSet<(String, String, String)>) {
    let nodes =
        run_script(browser, "return [...document.querySelectorAll('#graph g.node')].map(n => n.dataset.postId)").await;
    let edges = run_script(
        browser,
        "return [...document.querySelectorAll('#graph path.edge')].map(e => [e.dataset.child, e.dataset.parent, e.dataset.kind])",
    )
    .await;
    let nodes = nodes.as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect();
    let edges = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e[0].as_str().unwrap().to_owned(), e[1].as_str().unwrap().to_owned(), e[2].as_str().unwrap().to_owned())
        })
        .collect();
    (nodes, edges)
}

/// The API's posts and edges of a cascade.
fn api_graph(api: SocketAddr, cascade_id: &str) -> (BTreeSet<String>, BTreeSet<(String, String, String)>) {
    let (status, body) = http_get(api, &format!("/cascades/{cascade_id}"));
    assert_eq!(status, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    let nodes = view["nodes"].as_array().unwrap().iter().map(|n| n["post_id"].as_str().unwrap().to_owned()).collect();
    let edges = view["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap().to_owned();
            (text("child_id"), text("parent_id"), text("kind"))
        })
        .collect();
    (nodes, edges)
}

/// Submits the review form with `token` and returns the status message once it is final.
async fn submit_review(browser: &Browser, token: &str, note: &str) -> String {
    let client = &browser.client;
    client.find(Locator::Css("#review-decision")).await.unwrap().select_by_value("confirmed_campaign").await.unwrap();
    let note_field = client.find(Locator::Css("#review-note")).await.unwrap();
    note_field.clear().await.unwrap();
    note_field.send_keys(note).await.unwrap();
    let token_field = client.find(Locator::Css("#review-token")).await.unwrap();
    token_field.clear().await.unwrap();
    token_field.send_keys(token).await.unwrap();
    client.find(Locator::Css("#review-submit")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let message = browser.text_of("#review-message").await;
        if message.starts_with("Recorded") || message.starts_with("Not recorded") {
            return message;
        }
        assert!(Instant::now() < deadline, "the review form never answered: {message:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_follows_the_campaign_to_its_alert_and_records_a_review() {
    let Some(runtime) = onnxruntime_library() else { return };
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let api = free_http();
    // Its output goes to a file: the demo must be able to print for as long as it runs.
    let output = dir.path().join("demo.out");
    let _demo = Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .args(["demo", "--speed", "60", "--listen", &api.to_string(), "--out"])
            .arg(&data)
            .env("ORT_DYLIB_PATH", runtime)
            .stdout(std::fs::File::create(&output).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let printed = || std::fs::read_to_string(&output).unwrap_or_default();
    wait_for("the demo to print the explorer's URL", Duration::from_secs(120), || printed().contains("explorer: "));
    let explorer = format!("http://{api}/");
    assert!(printed().contains(&format!("explorer: {explorer} ")), "{}", printed());
    let campaign = cascade_id_for(CAMPAIGN_ROOT);
    let client = &browser.client;

    // The live list, opened as the demo starts: the campaign grows in it without a reload.
    client.goto(&explorer).await.unwrap();
    run_script(&browser, "window.loadedOnce = true; return null").await;
    let size_shown = format!(
        "const row = document.querySelector(\"#cascades tr[data-cascade-id='{campaign}']\"); \
         return row ? row.children[1].textContent : null"
    );
    let mut sizes_seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !(printed().contains("sample done") && sizes_seen.last().is_some_and(|size| size == "46")) {
        assert!(Instant::now() < deadline, "the campaign never reached 46 posts on the page: {sizes_seen:?}");
        if let Some(size) = run_script(&browser, &size_shown).await.as_str()
            && sizes_seen.last().is_none_or(|last| last != size)
        {
            sizes_seen.push(size.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("campaign sizes seen on the live list: {sizes_seen:?}");
    assert!(sizes_seen.len() >= 2, "the list updated as the campaign grew: {sizes_seen:?}");
    assert_eq!(run_script(&browser, "return window.loadedOnce === true").await, Value::Bool(true), "without a reload");
    let token = printed()
        .lines()
        .find_map(|line| line.strip_prefix("reviews in the explorer: reviewer demo, token ").map(str::to_owned))
        .expect("the demo prints the reviewer's token");

    // Filtered by rule; the campaign's cascade opened from the keyboard.
    let row = format!("#cascades tr[data-cascade-id='{campaign}']");
    browser.wait_for_css("#alerts tr[data-alert-id]", PAGE_TIMEOUT).await;
    client.find(Locator::Css("#filter-rule")).await.unwrap().select_by_value("amplification_campaign").await.unwrap();
    let shown_rules = "return [...document.querySelectorAll('#alerts a.alert-link')].map(a => a.textContent)";
    let rules = run_script(&browser, shown_rules).await;
    assert_eq!(rules, serde_json::json!(["amplification_campaign"]), "the filter keeps the rule's alerts only");
    // The list is rebuilt when what it shows changes: a row found may go stale before it is used.
    let enter = char::from(Key::Enter).to_string();
    let mut opened = false;
    for _ in 0..5 {
        let link = browser.wait_for_css(&format!("{row} a.cascade-link"), PAGE_TIMEOUT).await;
        if link.send_keys(&enter).await.is_ok() {
            opened = true;
            break;
        }
    }
    assert!(opened, "the campaign's link could not be used");

    // The cascade's view: the API's posts and edges, the longest chain of summaries.
    browser.wait_for_css("#graph g.node", PAGE_TIMEOUT).await;
    assert_eq!(browser.text_of("#cascade-id").await, campaign);
    let (page_nodes, page_edges) = drawn_graph(&browser).await;
    let (api_nodes, api_edges) = api_graph(api, &campaign);
    assert_eq!(page_nodes, api_nodes, "the page draws the API's posts");
    assert_eq!(page_edges, api_edges, "and its edges, with their kinds");
    assert!(page_nodes.len() >= 46, "the whole campaign: {}", page_nodes.len());
    let kinds: BTreeSet<&str> = page_edges.iter().map(|(_, _, kind)| kind.as_str()).collect();
    assert!(kinds.contains("shared_url") && kinds.contains("summary"), "{kinds:?}");
    let chain =
        run_script(&browser, "return [...document.querySelectorAll('#path article')].map(a => a.dataset.postId)").await;
    let chain: Vec<&str> = chain.as_array().unwrap().iter().map(|id| id.as_str().unwrap()).collect();
    assert_eq!(chain.first().copied(), Some(CAMPAIGN_ROOT), "the path starts at the origin");
    assert!(chain.len() >= 3, "origin, then summaries of summaries: {chain:?}");
    let thick = run_script(&browser, "return document.querySelectorAll('#graph path.edge.chain').length").await;
    assert_eq!(thick.as_u64().unwrap() as usize, chain.len() - 1, "the chain is highlighted");
    let evidence =
        run_script(&browser, "return document.querySelector('#graph path.edge').getAttribute('aria-label')").await;
    assert!(evidence.as_str().unwrap().contains(" → "), "an edge names its evidence: {evidence}");
    let exported = run_script(
        &browser,
        &format!(
            "return fetch('/cascades/{campaign}').then(answer => answer.json()).then(view => {{ \
               const xml = new DOMParser().parseFromString(graphml(view), 'application/xml'); \
               const svg = new DOMParser().parseFromString(svgText(), 'image/svg+xml'); \
               return [xml.getElementsByTagName('node').length, xml.getElementsByTagName('edge').length, \
                       svg.querySelectorAll('g.node').length]; }})"
        ),
    )
    .await;
    assert_eq!(
        exported,
        serde_json::json!([page_nodes.len(), page_edges.len(), page_nodes.len()]),
        "GraphML and SVG exports"
    );

    // An alert's view, from the list: lifecycle, conditions, SQL, and the link back to the cascade.
    client.goto(&explorer).await.unwrap();
    let alert_link = browser.wait_for_css("#alerts a.alert-link", PAGE_TIMEOUT).await;
    let alert_href = alert_link.attr("href").await.unwrap().unwrap();
    alert_link.click().await.unwrap();
    browser.wait_for_css("#alert-lifecycle tbody tr", PAGE_TIMEOUT).await;
    let alert_id = alert_href.rsplit('/').next().unwrap().to_owned();
    assert!(browser.text_of("#alert-sql").await.contains(&alert_id));
    assert!(!browser.text_of("#alert-conditions").await.is_empty());
    let back = client.find(Locator::Css("#alert-cascade")).await.unwrap().attr("href").await.unwrap().unwrap();
    assert_eq!(back, format!("/view/cascades/{campaign}"));

    // Reviews: refused without a reviewer's token, recorded with it, and read back with SQL.
    let refused = submit_review(&browser, "", "no token").await;
    assert!(refused.contains("reviewer's token"), "{refused}");
    let recorded = submit_review(&browser, &token, "Same URL pushed by fresh accounts on four platforms").await;
    assert_eq!(recorded, "Recorded: confirmed_campaign by demo.");
    browser.wait_for_css("#reviews li", PAGE_TIMEOUT).await;
    let query = echotrace(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT reviewer, decision, note, alert_id, cascade_id FROM reviews",
    ]);
    let rows = String::from_utf8_lossy(&query.stdout);
    assert!(query.status.success(), "{}", String::from_utf8_lossy(&query.stderr));
    assert_eq!(rows.lines().count(), 2, "one decision recorded, the refused one not: {rows}");
    assert!(
        rows.contains(&format!(
            "demo,confirmed_campaign,Same URL pushed by fresh accounts on four platforms,{alert_id},{}",
            back.rsplit('/').next().unwrap()
        )),
        "{rows}"
    );
    browser.close().await;
}

/// Post `i` of the large cascade: the root, then reposts, each of an earlier post (a tree about
/// 13 generations deep), on four platforms, by as many accounts.
fn repost(i: usize) -> String {
    let reference = if i == 0 { String::new() } else { format!(r#","repost_of":"big:{}""#, (i - 1) / 2) };
    let second = i * 2_400 / POSTS;
    format!(
        r#"{{"id":"big:{i}","platform":"{}","author":{{"id":"a{i}","handle":"account{i}","declared_automated":{}}},"created_at":"2026-11-01T09:{:02}:{:02}Z","text":"Spread this before it is taken down"{reference}}}"#,
        ["x", "bluesky", "mastodon", "threads"][i % 4],
        i.is_multiple_of(3),
        10 + second / 60,
        second % 60
    )
}

const POSTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_of_ten_thousand_posts_is_drawn_aggregated_and_stays_usable() {
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let kafka = echotrace::config::Config::default().kafka;
    for topic in ["posts", &kafka.dead_letter_topic, &kafka.edges_topic, &kafka.alerts_topic] {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    let broker = cluster.bootstrap_servers();
    let config = dir.path().join("echotrace.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{broker}\"\ngroup_id = \"explorer\"\ninput_topics = [\"posts\"]\n\
             [detector.semantic]\nenabled = false\n[output]\ndir = \"{}\"\n",
            dir.path().join("out").display()
        ),
    )
    .unwrap();
    let api = free_http();
    let _instance = start_instance(&config, api, &dir.path().join("run.log"));
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", &broker).set("linger.ms", "20").create().unwrap();
    for i in 0..POSTS {
        let payload = repost(i);
        // One key: one partition, so every repost arrives after the post it reposts.
        producer.send(BaseRecord::to("posts").key("big").payload(&payload)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    // Processed, not only consumed: the last posts wait for the order across partitions until
    // the empty ones are found read to their end.
    wait_for("every post processed", Duration::from_secs(300), || {
        std::net::TcpStream::connect(api).is_ok() && metric(api, "echotrace_posts_processed_total") as usize >= POSTS
    });
    let cascade = cascade_id_for("big:0");

    let started = Instant::now();
    browser.client.goto(&format!("http://{api}/view/cascades/{cascade}")).await.unwrap();
    browser.wait_for_css("#graph svg[data-groups]", Duration::from_secs(120)).await;
    browser.wait_for_css("#accounts tbody tr", PAGE_TIMEOUT).await;
    let load = started.elapsed();
    assert_eq!(browser.text_of("#cascade-size").await, POSTS.to_string());
    let drawn = run_script(
        &browser,
        "const svg = document.querySelector('#graph svg'); \
         return [Number(svg.dataset.posts), document.querySelectorAll('#graph g.group').length, \
                 document.querySelectorAll('#graph g.node').length, document.querySelectorAll('#accounts tbody tr').length, \
                 document.querySelectorAll('#timeline rect').length]",
    )
    .await;
    let [posts, groups, single_nodes, accounts, bars] =
        [0, 1, 2, 3, 4].map(|i| drawn[i].as_u64().unwrap_or_else(|| panic!("{drawn}")) as usize);
    assert_eq!(posts, POSTS);
    assert!((4..=80).contains(&groups), "grouped by generation and platform: {groups} boxes");
    assert_eq!(single_nodes, 0, "no post drawn one by one past the limit");
    assert_eq!(accounts, 300, "the accounts with most posts, and a count of the rest");
    assert!(bars > 0);
    // Still usable from the keyboard: a group takes the focus and names its posts.
    let named = run_script(
        &browser,
        "const g = document.querySelector('#graph g.group'); g.focus(); \
         return document.activeElement === g ? g.getAttribute('aria-label') : null",
    )
    .await;
    assert!(named.as_str().is_some_and(|label| label.contains("post(s) on")), "{named}");
    println!("view of a {POSTS}-post cascade loaded and drawn in {:.2} s", load.as_secs_f64());
    browser.close().await;
}
