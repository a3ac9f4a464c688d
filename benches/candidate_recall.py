#!/usr/bin/env python3
"""How often semantic linking's candidates hold a summary's source, per part of the dev streams.

    export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
    cargo build -p echotrace-benches --bin relink
    target/debug/relink ../shared/data/summaries_cnn_dm.jsonl --cache /tmp/echotrace-embeddings \\
        --config CONFIG.toml --candidates /tmp/summaries.candidates.tsv
    python3 benches/candidate_recall.py /tmp/summaries.candidates.tsv ../shared/data/summaries_cnn_dm.truth.tsv

For every summary whose article is in the stream, it reads the candidates `relink --candidates`
wrote (every candidate the detector ranked, best first) and counts, per part of the split that
`split_scores.py` makes (by article, salted hash):

- with candidates: the summary reached the semantic stage and found candidates (the rest were
  explained lexically, mostly as near-duplicates of another summary of the same article, had too
  few content words, or found nothing above `min_cosine`);
- source among: a candidate is the article or another summary of it;
- article among: the article itself is a candidate;
- source first: the top-ranked candidate is the article or another summary of it.

What is not among the candidates no decision can link, so "source among" bounds attribution by
meaning; the gap to "source first" is the ranking's.
"""
import argparse
import collections
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import split_scores  # noqa: E402
from fit_semantic import source_item  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", help="what `relink --candidates` wrote")
    parser.add_argument("truth", help="the summaries stream's truth file")
    parser.add_argument("--salt", default="echotrace-split-v1")
    args = parser.parse_args()
    ranked = collections.defaultdict(list)
    with open(args.candidates, newline="") as rows:
        for row in csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE):
            ranked[row["post_id"]].append(row)
    counts = collections.defaultdict(collections.Counter)
    for row in split_scores.read_truth(args.truth):
        if row["expected_parent"] == "-":
            continue
        item = source_item(row["child_id"])
        part = split_scores.part_of(item, 2, args.salt)
        candidates = [candidate["candidate_id"] for candidate in ranked.get(row["child_id"], [])]
        tally = counts[part]
        tally["summaries"] += 1
        tally["with candidates"] += bool(candidates)
        tally["source among"] += any(source_item(c) == item for c in candidates)
        tally["article among"] += row["expected_parent"] in candidates
        tally["source first"] += bool(candidates) and source_item(candidates[0]) == item
    columns = ["with candidates", "source among", "article among", "source first"]
    print("| part | summaries with their article | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for part in sorted(counts):
        tally = counts[part]
        cells = " | ".join(f"{tally[c] / tally['summaries']:.3f}" for c in columns)
        print(f"| {split_scores.part_name(part)} | {tally['summaries']} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
