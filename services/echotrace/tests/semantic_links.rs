//! Semantic linking end to end on a small owned fixture, with each shipped encoder and its shipped
//! (fitted) decision: an extractive summary and a one-line abstractive summary link to their
//! article, a summary of an article that is not in the stream links to nothing, and a paraphrase
//! of a headline links to it. Each decision must clear its model's threshold by a margin (in
//! log-odds), so the test asserts the model's judgement, not a rounding.

mod common;

use echotrace::config::Config;
use echotrace::embed::{EmbedConfig, Embedder, Encoder};
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::post::Post;
use echotrace_core::records::EdgeKind;
use std::path::Path;

/// (id, minutes after the first post, text).
const POSTS: &[(&str, i64, &str)] = &[
    (
        "news:harbour",
        0,
        "The harbour authority confirmed on Tuesday that the old swing bridge at Greywater will close for six \
         weeks of repairs from Monday. Engineers found corrosion in the turning mechanism during an inspection \
         last month, and the bridge has been stuck open twice since the spring. While it is shut, ferry traffic \
         will be diverted to the north quay and a temporary footbridge will carry pedestrians across the inner \
         basin. Shop owners on the quay said they feared losing trade during the closure, and the authority \
         promised extra signs and a shuttle bus from the station. The repair will cost 2.4 million pounds, \
         shared between the council and the port.",
    ),
    (
        "news:library",
        2,
        "The Orchard Row library will stay open on Sundays after councillors voted to keep its weekend hours. \
         Campaigners had collected four thousand signatures against the cut, and volunteers offered to run the \
         children's reading hour. The council said the savings would be found elsewhere in the culture budget, \
         and the library will also extend its evening opening on Thursdays from next month.",
    ),
    ("x:head-cycle", 3, "Council approves new cycle lanes on the Eastbrook ring road after a long consultation"),
    (
        "threads:extractive",
        40,
        "The old swing bridge at Greywater will close for six weeks of repairs from Monday. Ferry traffic will be \
         diverted to the north quay and a temporary footbridge will carry pedestrians.",
    ),
    (
        "bluesky:oneline",
        55,
        "Greywater's corroded swing bridge shuts for six weeks of repairs; ferries move to the north quay.",
    ),
    (
        "mastodon:withheld",
        60,
        "The Tamside rail viaduct will close for a year of strengthening work, with buses replacing trains \
         between Ashcombe and Tollmere until next spring.",
    ),
    (
        "reddit:tweet-cycle",
        70,
        "Eastbrook ring road is getting new cycle lanes, the council approved them after consulting for ages",
    ),
];

#[test]
fn summaries_one_liners_withheld_sources_and_paraphrases_with_the_transformer() {
    let Some(mut embedder) = common::shipped_embedder() else { return };
    let expected = [
        ("threads:extractive", Some("news:harbour"), Some(EdgeKind::Summary)),
        ("bluesky:oneline", Some("news:harbour"), Some(EdgeKind::Summary)),
        ("mastodon:withheld", None, None),
        ("reddit:tweet-cycle", Some("x:head-cycle"), Some(EdgeKind::Paraphrase)),
    ];
    // A quarter in log-odds, about 0.05 in cosine: more than ONNX Runtime's kernels on another
    // processor move a vector (docs/semantic-linking.md, "The same links on every processor").
    links_the_fixture(DetectorConfig::default(), &mut embedder, &expected, 0.25);
}

#[test]
fn summaries_one_liners_withheld_sources_and_paraphrases_with_the_static_encoder() {
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/static-encoder.toml");
    let config = Config::load(&[settings.as_path()]).expect("the shipped static encoder settings load");
    assert_eq!(config.embed.encoder, Encoder::Static);
    let embed = EmbedConfig {
        static_dir: common::model_dir().join("static"),
        model_dir: common::model_dir(),
        ..config.embed.clone()
    };
    let mut embedder = Embedder::new(&embed).expect("the shipped static table loads");
    let expected = [
        ("threads:extractive", Some("news:harbour"), Some(EdgeKind::Summary)),
        // Its sibling summary shares more of its words than the article does; that summary is the
        // article's child, and the origin check has passed the one-liner against the article too.
        ("bluesky:oneline", Some("threads:extractive"), Some(EdgeKind::Paraphrase)),
        ("mastodon:withheld", None, None),
        ("reddit:tweet-cycle", Some("x:head-cycle"), Some(EdgeKind::Paraphrase)),
    ];
    // The static encoder's vectors are sums of table rows in a fixed order, the same on every
    // processor, so no decision can flip between machines; the margin only keeps a coin toss out.
    links_the_fixture(config.detector, &mut embedder, &expected, 0.1);
}

/// Replays the fixture through a detector with `config`, embedding with `embedder`, and asserts
/// each `expected` post's parent and edge kind, and that its decision sits at least `min_lead` (in
/// log-odds) from its threshold.
fn links_the_fixture(
    config: DetectorConfig,
    embedder: &mut Embedder,
    expected: &[(&str, Option<&str>, Option<EdgeKind>)],
    min_lead: f32,
) {
    let models = config.semantic.clone();
    let logit = common::log_odds;
    let mut detector = Detector::new(config);
    let mut decided = Vec::new();
    for (id, minute, text) in POSTS {
        let line = serde_json::json!({
            "id": id,
            "platform": id.split(':').next(),
            "author": {"id": format!("author-{id}"), "handle": format!("author-{id}")},
            "created_at": format!("2026-06-01T{:02}:{:02}:00Z", 9 + minute / 60, minute % 60),
            "text": text,
        });
        let post = detector.preparer().prepare(Post::from_json(line.to_string().as_bytes()).expect("a valid post"));
        let embedding = detector.embedding_key(&post).map(|_| embedder.embed(&[text]).expect("embeds").remove(0));
        // How far the best candidate by meaning is from its model's threshold, before the post is placed.
        let lead = embedding.as_ref().and_then(|e| detector.explain_semantic(&post, e)).map(|choice| {
            let model = if choice.kind == EdgeKind::Summary { &models.summary } else { &models.paraphrase };
            let weakest =
                choice.origin.map_or(choice.evidence.score, |(_, origin)| origin.score.min(choice.evidence.score));
            logit(weakest) - logit(model.min_probability)
        });
        let detection = detector.process_prepared(post, embedding.as_ref(), None).expect("a new post");
        decided.push((*id, detection.post.parent_id, detection.post.parent_kind, lead));
    }
    let find = |id: &str| decided.iter().find(|(post, ..)| *post == id).expect("processed");
    for (id, parent, kind) in expected {
        let (_, got_parent, got_kind, lead) = find(id);
        assert_eq!((got_parent.as_deref(), *got_kind), (*parent, *kind), "{id}: lead {lead:?}");
        // Linked or refused with room to spare.
        if let Some(lead) = lead {
            assert!(lead.abs() >= min_lead, "{id} sits {lead} in log-odds from its threshold");
        }
    }
}
