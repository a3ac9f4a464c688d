#!/usr/bin/env python3
"""Estimates a two-stage linker: the static encoder decides where it is confident, the transformer
decides the rest. Prints, for each band of the static model's probability sent to the transformer,
the share of posts sent and the paraphrase F1 of the fit and validation parts.

    python3 benches/gate_by_confidence.py STATIC_LINKS.tsv STATIC_EVIDENCE.tsv TRANSFORMER_LINKS.tsv TRUTH_TSV

The inputs are what `relink --links --evidence` wrote for one stream with each encoder's settings
(`benches/README.md`, "A transformer only where the static encoder is unsure", has the commands).
A post whose static best candidate's probability (`score`) lies in the band takes the transformer's
parent, any other post the static encoder's. It approximates a real two-stage run, whose later links
would see the earlier ones made that way; the share sent counts posts only, not the candidates they
would need embedded by the transformer too.
"""
import argparse
import csv
import sys

from split_scores import paraphrase_scores, part_name, read_truth

BANDS = [(0.0, 1.0), (0.05, 1.0), (0.05, 0.9), (0.05, 0.7), (0.05, 0.5), (0.05, 0.3), (0.1, 0.5), (0.2, 0.6)]


def rows_by_post(path: str) -> dict:
    with open(path, newline="") as rows:
        return {row["post_id"]: row for row in csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("static_links")
    parser.add_argument("static_evidence")
    parser.add_argument("transformer_links")
    parser.add_argument("truth")
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--salt", default="echotrace-split-v1")
    args = parser.parse_args()
    static, transformer = rows_by_post(args.static_links), rows_by_post(args.transformer_links)
    evidence = rows_by_post(args.static_evidence)
    truth = read_truth(args.truth)
    print("| static probability sent to the transformer | posts sent | " + " | ".join(
        f"{part_name(part)} F1" for part in range(args.parts)) + " |")
    print("|---|---:|" + "---:|" * args.parts)
    for low, high in BANDS:
        sent = {post for post, row in evidence.items() if low <= float(row["score"]) <= high}
        parent = {post: (transformer if post in sent else static)[post]["parent_id"] or None for post in static}
        scores = paraphrase_scores(parent, truth, args.parts, args.salt)
        figures = " | ".join(f"{scores[part][2]:.3f}" for part in range(args.parts))
        print(f"| {low:.2f} to {high:.2f} | {len(sent) / len(static):.3f} | {figures} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
