//! Semantic linking end to end on a small owned fixture, with the shipped model and the shipped
//! (fitted) decision: an extractive summary and a one-line abstractive summary link to their
//! article, a summary of an article that is not in the stream links to nothing, and a paraphrase
//! of a headline links to it. Each decision must clear its model's threshold by a margin (in
//! log-odds), so the test asserts the model's judgement, not a rounding.

mod common;

use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::post::Post;
use echotrace_core::records::EdgeKind;

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
fn summaries_one_liners_withheld_sources_and_paraphrases_on_an_owned_fixture() {
    let Some(mut embedder) = common::shipped_embedder() else { return };
    let models = DetectorConfig::default().semantic;
    let logit = common::log_odds;
    let mut detector = Detector::new(DetectorConfig::default());
    let mut decided = Vec::new();
    for (id, minute, text) in POSTS {
        let line = serde_json::json!({
            "id": id,
            "platform": id.split(':').next(),
            "author": {"id": format!("author-{id}"), "handle": format!("author-{id}")},
            "created_at": format!("2026-06-01T{:02}:{:02}:00Z", 9 + minute / 60, minute % 60),
            "text": text,
        });
        let post = Post::from_json(line.to_string().as_bytes()).expect("a valid post");
        let embedding = detector.embedding_key(&post).map(|_| embedder.embed(&[text]).expect("embeds").remove(0));
        // How far the best candidate by meaning is from its model's threshold, before the post is placed.
        let lead = embedding.as_ref().and_then(|e| detector.explain_semantic(&post, e)).map(|choice| {
            let model = if choice.kind == EdgeKind::Summary { &models.summary } else { &models.paraphrase };
            let weakest =
                choice.origin.map_or(choice.evidence.score, |(_, origin)| origin.score.min(choice.evidence.score));
            logit(weakest) - logit(model.min_probability)
        });
        let detection = detector.process_embedded(post, embedding.as_ref()).expect("a new post");
        decided.push((*id, detection.post.parent_id, detection.post.parent_kind, lead));
    }
    let find = |id: &str| decided.iter().find(|(post, ..)| *post == id).expect("processed");
    let expect = |id: &str, parent: Option<&str>, kind: Option<EdgeKind>| {
        let (_, got_parent, got_kind, lead) = find(id);
        assert_eq!((got_parent.as_deref(), *got_kind), (parent, kind), "{id}: lead {lead:?}");
        // Linked or refused with room to spare: a quarter in log-odds is about 0.05 in cosine.
        if let Some(lead) = lead {
            assert!(lead.abs() >= 0.25, "{id} sits {lead} in log-odds from its threshold");
        }
    };
    expect("threads:extractive", Some("news:harbour"), Some(EdgeKind::Summary));
    expect("bluesky:oneline", Some("news:harbour"), Some(EdgeKind::Summary));
    expect("mastodon:withheld", None, None);
    expect("reddit:tweet-cycle", Some("x:head-cycle"), Some(EdgeKind::Paraphrase));
}
