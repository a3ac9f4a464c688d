//! `echotrace query` over the datasets of a replay: known answers, an alert's SQL run unchanged,
//! the analysts' functions, and clear errors for bad SQL, a missing table and a corrupt file.

mod common;

use common::*;
use std::path::Path;

/// Runs a query and parses its JSON-lines result.
fn query(data: &Path, sql: &str) -> Vec<serde_json::Value> {
    let output = echotrace(&["query", "--data", data.to_str().unwrap(), "--format", "json", sql]);
    assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn failing(data: &Path, sql: &str) -> String {
    let output = echotrace(&["query", "--data", data.to_str().unwrap(), sql]);
    assert!(!output.status.success(), "{sql} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn sql_over_the_replayed_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = replay_sample(dir.path());

    let count = query(&data, "SELECT count(*) AS n FROM posts");
    assert_eq!(count[0]["n"], SAMPLE.lines().count());

    // The page's reproducing SQL, exactly as stored with the alert, returns the campaign.
    let alert = query(
        &data,
        "SELECT sql, cascade_id FROM alerts WHERE rule = 'amplification_campaign' AND state = 'firing' LIMIT 1",
    );
    let campaign = query(&data, alert[0]["sql"].as_str().unwrap());
    assert_eq!(campaign.len(), 46);
    assert!(campaign.iter().any(|p| p["post_id"] == CAMPAIGN_ROOT));

    // Lineage by recursive CTE: a campaign post's ancestry ends at the root.
    let cascade = alert[0]["cascade_id"].as_str().unwrap();
    let deepest =
        query(&data, &format!("SELECT post_id FROM posts WHERE generation = 2 AND cascade_id = '{cascade}' LIMIT 1"));
    let lineage = query(
        &data,
        &format!(
            "WITH RECURSIVE lineage(post_id, parent_id, depth) AS (
                SELECT post_id, parent_id, 0 FROM posts WHERE post_id = '{}'
                UNION ALL
                SELECT p.post_id, p.parent_id, l.depth + 1 FROM posts p JOIN lineage l ON p.post_id = l.parent_id)
             SELECT post_id FROM lineage ORDER BY depth",
            deepest[0]["post_id"].as_str().unwrap()
        ),
    );
    assert_eq!(lineage.len(), 3);
    assert_eq!(lineage[2]["post_id"], CAMPAIGN_ROOT);

    // lineage() gives the same chain, and for every derived post one row per generation up to a root.
    let by_function = query(
        &data,
        &format!("SELECT post_id FROM lineage('{}') ORDER BY depth", deepest[0]["post_id"].as_str().unwrap()),
    );
    assert_eq!(by_function, lineage);
    let derived = query(&data, "SELECT post_id, generation FROM posts WHERE generation > 0 ORDER BY post_id");
    for post in &derived {
        let id = post["post_id"].as_str().unwrap();
        let chain =
            query(&data, &format!("SELECT depth, post_id, parent_id, generation FROM lineage('{id}') ORDER BY depth"));
        assert_eq!(chain.len() as u64, post["generation"].as_u64().unwrap() + 1, "{id}: {chain:?}");
        for (child, parent) in chain.iter().zip(&chain[1..]) {
            assert_eq!(child["parent_id"], parent["post_id"], "{id}: {chain:?}");
        }
        assert_eq!(chain.last().unwrap()["generation"], 0, "{id} ends at a root: {chain:?}");
    }
    assert!(query(&data, "SELECT * FROM lineage('no-such-post')").is_empty());
    assert!(failing(&data, "SELECT * FROM lineage(42)").contains("lineage takes one post id as a string literal"));

    // hamming() finds the exact copies of the root; canonical_url() folds tracking parameters.
    let copies = query(
        &data,
        &format!(
            "SELECT count(*) AS n FROM posts p JOIN posts r ON r.post_id = '{CAMPAIGN_ROOT}'
             WHERE p.post_id <> r.post_id AND hamming(p.simhash, r.simhash) = 0"
        ),
    );
    assert!(copies[0]["n"].as_u64().unwrap() >= 5, "{copies:?}");
    let urls = query(&data, "SELECT count(DISTINCT canonical_url(evidence)) AS n FROM edges WHERE kind = 'shared_url'");
    assert!(urls[0]["n"].as_u64().unwrap() >= 1);

    // Partitions by event hour: the columns exist, and a filter on them prunes whole folders.
    let hours = query(&data, "SELECT date, hour, count(*) AS n FROM posts GROUP BY date, hour ORDER BY date, hour");
    assert!(!hours.is_empty() && hours.iter().all(|h| h["date"] == "2026-11-01"), "{hours:?}");
    let first_hour = hours[0]["hour"].as_str().unwrap();
    let pruned = query(
        &data,
        &format!(
            "SELECT count(*) AS n, min(date_part('hour', created_at)) AS h FROM posts WHERE date = '2026-11-01' AND hour = '{first_hour}'"
        ),
    );
    assert_eq!(pruned[0]["n"], hours[0]["n"]);
    assert_eq!(pruned[0]["h"].as_f64().unwrap() as u32, first_hour.parse::<u32>().unwrap());

    // cosine() over the stored embeddings gives back the cosine each semantic edge was linked by.
    let semantic = query(
        &data,
        "SELECT e.cosine AS linked, cosine(c.embedding, p.embedding) AS recomputed
         FROM edges e JOIN posts c ON c.post_id = e.child_id JOIN posts p ON p.post_id = e.parent_id
         WHERE e.kind IN ('paraphrase', 'summary')",
    );
    assert!(semantic.len() >= 3, "{semantic:?}");
    for edge in &semantic {
        let (linked, recomputed) = (edge["linked"].as_f64().unwrap(), edge["recomputed"].as_f64().unwrap());
        assert!((linked - recomputed).abs() < 1e-4, "{edge:?}");
    }
    // A post linked by an explicit repost was never embedded: NULL. A semantic child was: itself, 1.
    let repost =
        query(&data, "SELECT cosine(embedding, embedding) AS c FROM posts WHERE parent_kind = 'repost' LIMIT 1");
    assert_eq!(repost.len(), 1);
    assert!(repost[0]["c"].is_null(), "{repost:?}");
    let summary = query(
        &data,
        "SELECT cosine(p.embedding, p.embedding) AS c FROM posts p JOIN edges e ON e.child_id = p.post_id
         WHERE e.kind = 'summary' LIMIT 1",
    );
    assert!((summary[0]["c"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{summary:?}");
    let wrong = failing(&data, "SELECT cosine(text, text) FROM posts");
    assert!(wrong.contains("posts.embedding"), "{wrong}");

    // docs/queries.md's relay query: only the campaign was re-summarised in rounds by bots, and that
    // is the cascade recursive_summarisation opened its ticket on.
    let relays = query(
        &data,
        "SELECT cascade_id, max(summary_depth) AS summary_depth, max(automated_summary_depth) AS rounds_by_bots,
                max(platform_count) AS platforms
         FROM cascades GROUP BY cascade_id HAVING max(automated_summary_depth) >= 2 ORDER BY rounds_by_bots DESC",
    );
    assert_eq!(relays.len(), 1, "{relays:?}");
    assert_eq!(relays[0]["cascade_id"], cascade);
    assert!(relays[0]["platforms"].as_u64().unwrap() >= 2, "{relays:?}");
    let ticket = query(&data, "SELECT DISTINCT cascade_id FROM alerts WHERE rule = 'recursive_summarisation'");
    assert_eq!(ticket.len(), 1, "{ticket:?}");
    assert_eq!(ticket[0]["cascade_id"], cascade);

    // CSV and Parquet outputs.
    let csv =
        echotrace(&["query", "--data", data.to_str().unwrap(), "--format", "csv", "SELECT post_id FROM posts LIMIT 2"]);
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("post_id\n"));
    let parquet = dir.path().join("result.parquet");
    let out = echotrace(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "parquet",
        "--output",
        parquet.to_str().unwrap(),
        "SELECT * FROM cascades",
    ]);
    assert!(out.status.success() && parquet.exists());

    // Every investigation query in docs/queries.md runs and finds something in the demo's data.
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/queries.md")).unwrap();
    let blocks: Vec<&str> = docs.split("```sql").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert!(blocks.len() >= 12, "a dozen queries");
    for sql in blocks {
        assert!(!query(&data, sql).is_empty(), "no rows from docs/queries.md query:{sql}");
    }

    // Errors say what and where, and never crash.
    let bad = failing(&data, "SELEC post_id FROM posts");
    assert!(bad.contains("Line: 1") && bad.contains("Column"), "{bad}");
    let missing = failing(&data, "SELECT * FROM likes");
    assert!(missing.contains("likes") && missing.contains("not found"), "{missing}");
    let partition = dataset_files(&data.join("posts"))[0].parent().unwrap().to_owned();
    std::fs::write(partition.join("part-corrupt.parquet"), b"this is not parquet").unwrap();
    let corrupt = failing(&data, "SELECT count(*) FROM posts");
    assert!(corrupt.to_lowercase().contains("parquet"), "{corrupt}");
    std::fs::remove_file(partition.join("part-corrupt.parquet")).unwrap();
    // A file of the flat layout would be left out by a partitioned reader: refused, with the reason.
    std::fs::copy(dataset_files(&data.join("edges"))[0].clone(), data.join("edges/part-flat.parquet")).unwrap();
    let flat = failing(&data, "SELECT count(*) FROM posts");
    assert!(flat.contains("part-flat.parquet") && flat.contains("flat layout"), "{flat}");
    let nothing = failing(dir.path(), "SELECT 1");
    assert!(nothing.contains("not an echotrace output directory"), "{nothing}");
}

#[test]
fn lineage_crosses_merged_cascades_and_names_unseen_parents() {
    const CLAIM: &str = "maintainer dana whitlock secretly rejected the safety patches for the parser library";
    const OTHER: &str = "the committee postponed the vote on the harbour bridge until the spring session";
    let post = |id: &str, minute: u32, text: &str, extra: &str| {
        format!(
            r#"{{"id":"{id}","platform":"x","author":{{"id":"a-{id}","handle":"h{id}"}},"created_at":"2026-11-01T09:{minute:02}:00Z","text":"{text}"{extra}}}"#
        )
    };
    let stream = [
        post("x:1", 0, CLAIM, ""),
        post("x:2", 1, OTHER, ""),
        // Quotes x:2 and copies x:1: x:2's cascade merges into x:1's; x:2 stays stored under its own.
        post("x:3", 2, CLAIM, r#","quote_of":"x:2""#),
        post("x:4", 3, "reposting this", r#","repost_of":"x:3""#),
        post("x:5", 4, "quoting a post this consumer never saw", r#","quote_of":"x:99""#),
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let data = replay(dir.path(), &stream);

    let stored = query(&data, "SELECT post_id, cascade_id FROM posts WHERE post_id IN ('x:2', 'x:4') ORDER BY post_id");
    assert_ne!(stored[0]["cascade_id"], stored[1]["cascade_id"], "x:4's chain crosses a merge: {stored:?}");
    let chain = query(&data, "SELECT depth, post_id, parent_kind FROM lineage('x:4') ORDER BY depth");
    let ids: Vec<&str> = chain.iter().map(|r| r["post_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["x:4", "x:3", "x:2"], "{chain:?}");
    assert_eq!(chain[1]["parent_kind"], "quote");

    // A parent referenced but never stored ends the chain with its id alone.
    let unseen = query(&data, "SELECT depth, post_id, platform FROM lineage('x:5') ORDER BY depth");
    assert_eq!(unseen.len(), 2, "{unseen:?}");
    assert_eq!(unseen[1]["post_id"], "x:99");
    assert!(unseen[1].get("platform").is_none_or(|p| p.is_null()), "{unseen:?}");
}
