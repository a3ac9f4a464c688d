#!/usr/bin/env python3
"""Scores a replay on the fit and the validation part of a dev stream, side by side.

    python3 benches/split_scores.py summaries OUT_DIR TRUTH_TSV [--parts 2] [--salt echotrace-split-v1]
    python3 benches/split_scores.py paraphrase OUT_DIR TRUTH_TSV [--parts 2]

A constant fitted on a stream and judged on the same stream overstates it. This script assigns each
source item, never a single row, to a part: a summary's article (`cnn-17` in `bluesky:cnn-17-t0`,
withheld or not) and a tweet's headline (`headline_id`), so every summary of one article and every
tweet on one headline land in the same part. The part is a SHA-256 of salt and item, so the split is
the same on every run and machine. Part 0 is the fit part; the others are validation.

OUT_DIR is what `echotrace replay --out OUT_DIR` wrote (read with pyarrow). Attribution follows
`parent_id` up to the first `news:` ancestor, as ../shared/eval/score.py does; it prints per part
attribution top-1 and false attribution on withheld articles per summary kind (the targets hold for
every kind, not only on average), or paraphrase precision, recall and F1.
"""
import argparse
import collections
import csv
import hashlib
import re
import sys

import pyarrow.dataset as ds


def part_of(item: str, parts: int, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{item}".encode()).digest()[:8], "big") % parts


def load_parents(out_dir: str) -> dict:
    table = ds.dataset(f"{out_dir}/posts", format="parquet").to_table(columns=["post_id", "parent_id"])
    columns = table.to_pydict()
    return dict(zip(columns["post_id"], columns["parent_id"]))


def ancestors(parent: dict, post: str):
    seen = 0
    current = parent.get(post)
    while current is not None and seen < 10_000:
        yield current
        current = parent.get(current)
        seen += 1


def summaries(parent: dict, rows: list, parts: int, salt: str) -> None:
    counts = collections.defaultdict(collections.Counter)
    for row in rows:
        match = re.match(r"^[^:]+:(.+)-[^-]+$", row["child_id"])
        if not match:
            sys.exit(f"cannot tell the article of {row['child_id']}")
        part = part_of(match.group(1), parts, salt)
        kind = row["summary_kind"]
        got = next((a for a in ancestors(parent, row["child_id"]) if a.startswith("news:")), None)
        if row["expected_parent"] == "-":
            counts[part][("withheld", kind)] += 1
            counts[part][("falsely attributed", kind)] += got is not None
        else:
            counts[part][("present", kind)] += 1
            counts[part][("attributed", kind)] += got == row["expected_parent"]
    kinds = sorted({kind for part in counts.values() for (_, kind) in part})
    print("| part | kind | attribution top-1 | false attribution (withheld) |")
    print("|---|---|---:|---:|")
    for part in sorted(counts):
        c = counts[part]
        name = "fit" if part == 0 else f"validation {part}"
        for kind in kinds + ["all"]:
            pick = kinds if kind == "all" else [kind]
            present = sum(c[("present", k)] for k in pick)
            attributed = sum(c[("attributed", k)] for k in pick)
            withheld = sum(c[("withheld", k)] for k in pick)
            false = sum(c[("falsely attributed", k)] for k in pick)
            print(
                f"| {name} | {kind} | {attributed / max(present, 1):.3f} ({attributed}/{present}) "
                f"| {false / max(withheld, 1):.3f} ({false}/{withheld}) |"
            )


def paraphrase(parent: dict, rows: list, parts: int, salt: str) -> None:
    counts = collections.defaultdict(collections.Counter)
    for row in rows:
        part = part_of(row["headline_id"], parts, salt)
        linked = row["headline_id"] in set(ancestors(parent, row["child_id"]))
        positive = row["label"] == "1"
        counts[part]["tp"] += linked and positive
        counts[part]["fp"] += linked and not positive
        counts[part]["fn"] += positive and not linked
    print("| part | precision | recall | F1 |")
    print("|---|---:|---:|---:|")
    for part in sorted(counts):
        c = counts[part]
        precision = c["tp"] / max(c["tp"] + c["fp"], 1)
        recall = c["tp"] / max(c["tp"] + c["fn"], 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        name = "fit" if part == 0 else f"validation {part}"
        print(f"| {name} | {precision:.3f} | {recall:.3f} | {f1:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["summaries", "paraphrase"])
    parser.add_argument("out_dir")
    parser.add_argument("truth")
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--salt", default="echotrace-split-v1")
    args = parser.parse_args()
    with open(args.truth, newline="") as truth:
        rows = list(csv.DictReader(truth, delimiter="\t", quoting=csv.QUOTE_NONE))
    parent = load_parents(args.out_dir)
    (summaries if args.task == "summaries" else paraphrase)(parent, rows, args.parts, args.salt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
