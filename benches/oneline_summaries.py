#!/usr/bin/env python3
"""Builds the one-line dev variant of the CNN/DM summaries stream.

    python3 benches/oneline_summaries.py ../shared/data/summaries_cnn_dm OUT_PREFIX

The dev stream's summaries are two to five sentences long; streams in the wild also carry one-line
summaries (TL;DR style, a headline written over an article). The dev data has no such kind, so this
builds one from it: every summary post is replaced by its first sentence, keeping its id, platform,
author and time, and the articles are kept as they are. A reference summary's first sentence is the
first of the CNN/DM highlights, written by the outlet's editors; a model's is the opening of its
summary. Summaries of withheld articles stay withheld. Writes OUT_PREFIX.jsonl and
OUT_PREFIX.truth.tsv (the same columns, `summary_kind` suffixed `-oneline`), which
`benches/relink.rs` and `benches/split_scores.py` read like the dev stream.

Sentences end at `.`, `!` or `?` followed by white space and a capital letter, digit or quote; a
first sentence shorter than five words takes the next one too, so "U.S." or "Sen." do not cut it.
"""
import csv
import json
import re
import sys

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")


def first_sentence(text: str) -> str:
    sentences = SENTENCE_END.split(text.strip())
    first = sentences[0]
    for following in sentences[1:]:
        if len(first.split()) >= 5:
            break
        first = f"{first} {following}"
    return first


def build_variant(source: str, out: str) -> None:
    """Writes the one-line variant of the stream at prefix `source` to prefix `out`."""
    with open(f"{source}.truth.tsv", newline="") as truth:
        rows = list(csv.DictReader(truth, delimiter="\t", quoting=csv.QUOTE_NONE))
    summaries = {row["child_id"] for row in rows}
    with open(f"{source}.jsonl") as posts, open(f"{out}.jsonl", "w") as written:
        for line in posts:
            post = json.loads(line)
            if post["id"] in summaries:
                post["text"] = first_sentence(post["text"])
            written.write(json.dumps(post, ensure_ascii=False) + "\n")
    with open(f"{out}.truth.tsv", "w", newline="") as written:
        writer = csv.DictWriter(written, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "summary_kind": f"{row['summary_kind']}-oneline"})


def main() -> int:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    build_variant(*sys.argv[1:3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
