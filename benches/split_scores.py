#!/usr/bin/env python3
"""Scores a replay on the fit and the validation part of a dev stream, side by side.

    python3 benches/split_scores.py summaries OUT_DIR TRUTH_TSV [--parts 2] [--salt echotrace-split-v1]
    python3 benches/split_scores.py paraphrase OUT_DIR TRUTH_TSV [--parts 2]

A constant fitted on a stream and judged on the same stream overstates it. This script assigns each
source item, never a single row, to a part: a summary's article (`cnn-17` in `bluesky:cnn-17-t0`,
withheld or not) and a tweet's headline (`headline_id`), so every summary of one article and every
tweet on one headline land in the same part. The part is a SHA-256 of salt and item, so the split is
the same on every run and machine. Part 0 is the fit part; the others are validation.

OUT_DIR is what `echotrace replay --out OUT_DIR` wrote (read with pyarrow), or a links file that
`benches/src/bin/relink.rs --links` wrote (`post_id`, `parent_id`, `parent_kind`, tab-separated). Attribution follows
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
    if out_dir.endswith(".tsv"):
        with open(out_dir, newline="") as links:
            rows = csv.DictReader(links, delimiter="\t", quoting=csv.QUOTE_NONE)
            return {row["post_id"]: row["parent_id"] or None for row in rows}
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


def summary_counts(parent: dict, rows: list, parts: int, salt: str) -> dict:
    """Per part, a Counter of (what, summary kind): present, attributed, withheld, falsely attributed."""
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
    return counts


def summary_scores(counts: collections.Counter, kinds: list) -> tuple:
    """Attribution top-1 and false attribution over the given summary kinds of one part's counts."""
    present = sum(counts[("present", k)] for k in kinds)
    attributed = sum(counts[("attributed", k)] for k in kinds)
    withheld = sum(counts[("withheld", k)] for k in kinds)
    false = sum(counts[("falsely attributed", k)] for k in kinds)
    return attributed / max(present, 1), false / max(withheld, 1), (attributed, present, false, withheld)


def part_name(part: int) -> str:
    return "fit" if part == 0 else f"validation {part}"


def summaries(parent: dict, rows: list, parts: int, salt: str) -> None:
    counts = summary_counts(parent, rows, parts, salt)
    kinds = sorted({kind for part in counts.values() for (_, kind) in part})
    print("| part | kind | attribution top-1 | false attribution (withheld) |")
    print("|---|---|---:|---:|")
    for part in sorted(counts):
        for kind in kinds + ["all"]:
            top1, false_rate, (attributed, present, false, withheld) = summary_scores(
                counts[part], kinds if kind == "all" else [kind]
            )
            print(
                f"| {part_name(part)} | {kind} | {top1:.3f} ({attributed}/{present}) "
                f"| {false_rate:.3f} ({false}/{withheld}) |"
            )


def paraphrase_scores(parent: dict, rows: list, parts: int, salt: str) -> dict:
    """Per part, paraphrase (precision, recall, F1): linked means the headline is an ancestor."""
    counts = collections.defaultdict(collections.Counter)
    for row in rows:
        part = part_of(row["headline_id"], parts, salt)
        linked = row["headline_id"] in set(ancestors(parent, row["child_id"]))
        positive = row["label"] == "1"
        counts[part]["tp"] += linked and positive
        counts[part]["fp"] += linked and not positive
        counts[part]["fn"] += positive and not linked
    scores = {}
    for part, c in counts.items():
        precision = c["tp"] / max(c["tp"] + c["fp"], 1)
        recall = c["tp"] / max(c["tp"] + c["fn"], 1)
        scores[part] = (precision, recall, 2 * precision * recall / max(precision + recall, 1e-12))
    return scores


def paraphrase(parent: dict, rows: list, parts: int, salt: str) -> None:
    print("| part | precision | recall | F1 |")
    print("|---|---:|---:|---:|")
    for part, (precision, recall, f1) in sorted(paraphrase_scores(parent, rows, parts, salt).items()):
        print(f"| {part_name(part)} | {precision:.3f} | {recall:.3f} | {f1:.3f} |")


def read_truth(path: str) -> list:
    with open(path, newline="") as truth:
        return list(csv.DictReader(truth, delimiter="\t", quoting=csv.QUOTE_NONE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["summaries", "paraphrase"])
    parser.add_argument("out_dir")
    parser.add_argument("truth")
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--salt", default="echotrace-split-v1")
    args = parser.parse_args()
    rows = read_truth(args.truth)
    parent = load_parents(args.out_dir)
    (summaries if args.task == "summaries" else paraphrase)(parent, rows, args.parts, args.salt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
