#!/usr/bin/env python3
"""Does a post's text say whether a model wrote it? Measured on the dev summaries stream.

    python3 benches/automation_text_signal.py --data ../shared/data

`summaries_cnn_dm` labels each summary with who wrote it: `reference` (the editors' highlights, people)
or a model (`gpt3`, `brio`, `pegasus`, `t0`). Two text signals are fitted on the fit half of the
articles (the salted SHA-256 split of `split_scores.py`, by article, so no article's summaries are on
both sides) and judged by ROC AUC on the validation half, per model and overall:

- **style**: ten counts a text carries (words, mean word length, sentences, words per sentence,
  commas and other punctuation per word, capitalised and numeric tokens per word, distinct-word
  share, share of words ending a sentence without a full stop), in a logistic regression;
- **n-grams**: character 3- to 5-grams of the lower-cased text, hashed into 4,096 buckets, in an
  L2-penalised logistic regression.

Both are fitted by Newton's method (numpy only). The script prints the AUCs; what they mean for the
scorer is in `benches/README.md`, "An automation signal from text".
"""
import argparse
import collections
import json
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import split_scores  # noqa: E402
from fit_semantic import fit_logistic  # noqa: E402

BUCKETS = 4096
MODELS = ["gpt3", "brio", "pegasus", "t0"]


def article_of(post_id: str) -> str:
    """`bluesky:cnn-17-t0` → `cnn-17`."""
    return post_id.split(":", 1)[-1].rsplit("-", 1)[0]


def style(text: str) -> list:
    words = text.split()
    n = max(len(words), 1)
    sentences = max(len(re.findall(r"[.!?](\s|$)", text)), 1)
    return [
        math.log(n),
        sum(len(w) for w in words) / n,
        math.log(sentences),
        n / sentences,
        text.count(",") / n,
        len(re.findall(r"[;:()\"'\-]", text)) / n,
        sum(w[:1].isupper() for w in words) / n,
        sum(any(c.isdigit() for c in w) for w in words) / n,
        len({w.lower() for w in words}) / n,
        float(not text.rstrip().endswith(".")),
    ]


def ngrams(text: str) -> np.ndarray:
    row = np.zeros(BUCKETS)
    lowered = f" {text.lower()} "
    for size in (3, 4, 5):
        for start in range(len(lowered) - size + 1):
            gram = lowered[start:start + size]
            row[int.from_bytes(gram.encode()[:8].ljust(8, b"\0"), "little") * 2654435761 % BUCKETS] += 1
    total = row.sum()
    return np.log1p(row) / max(math.sqrt(total), 1.0)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    positives = labels.sum()
    negatives = len(labels) - positives
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the dev streams' folder (../shared/data)")
    parser.add_argument("--salt", default="echotrace-split-v1", help="the split's salt (split_scores.py's default)")
    args = parser.parse_args()
    kinds = {row["child_id"]: row["summary_kind"] for row in split_scores.read_truth(
        os.path.join(args.data, "summaries_cnn_dm.truth.tsv"))}
    texts, kind_of, part = [], [], []
    with open(os.path.join(args.data, "summaries_cnn_dm.jsonl")) as stream:
        for line in stream:
            post = json.loads(line)
            kind = kinds.get(post["id"])
            if kind is None:
                continue
            texts.append(post["text"])
            kind_of.append(kind)
            part.append(split_scores.part_of(article_of(post["id"]), 2, args.salt))
    kind_of, part = np.array(kind_of), np.array(part)
    labels = (kind_of != "reference").astype(float)
    features = {
        "style": np.array([style(t) for t in texts]),
        "n-grams": np.array([ngrams(t) for t in texts]),
    }
    print(f"{len(texts)} summaries: {int((part == 0).sum())} fit, {int((part == 1).sum())} validation "
          f"(by article); model-written {int(labels.sum())}, reference {int((1 - labels).sum())}")
    header = ["signal", "all models"] + MODELS
    print("\nROC AUC, model-written against reference, fit half / validation half")
    print(" | ".join(header))
    for name, x in features.items():
        if name == "style":
            mean, spread = x[part == 0].mean(axis=0), x[part == 0].std(axis=0) + 1e-9
            x = (x - mean) / spread
        weights = fit_logistic(x[part == 0], labels[part == 0], l2=1.0 if name == "style" else 10.0)
        scores = weights[0] + x @ weights[1:]
        cells = [name]
        for model in [None] + MODELS:
            mask = np.ones(len(texts), bool) if model is None else (kind_of == model) | (kind_of == "reference")
            cells.append(" / ".join(f"{auc(scores[mask & (part == p)], labels[mask & (part == p)]):.3f}" for p in (0, 1)))
        print(" | ".join(cells))
    counts = collections.Counter(zip(kind_of, part))
    print("\nsummaries per kind (fit / validation): "
          + ", ".join(f"{k} {counts[(k, 0)]}/{counts[(k, 1)]}" for k in ["reference"] + MODELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
