#!/usr/bin/env python3
"""Fits semantic linking's decision on one half of the dev streams and judges it on the other.

    export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
    cargo build -p echotrace-benches --bin relink
    python3 benches/fit_semantic.py --data ../shared/data --work /tmp/echotrace-fit \\
        [--relink target/debug/relink] [--rounds 1] [--encoder transformer] [--out FITTED.toml]

With the shipped defaults (one round, the transformer) it reproduces the models in
`services/echotrace-core/src/link/semantic.rs` and `deploy/echotrace.toml`; --encoder static fits
them for the static encoder.

The streams: `summaries_cnn_dm` (multi-sentence summaries), its one-line variant
(`benches/oneline_summaries.py`, built into --work) and `paraphrase_tweets_train`. Every source item
(an article, a headline) is assigned to the fit part or the validation part by `split_scores.py`'s
salted hash, so no article's summaries or headline's tweets are on both sides.

1. `relink --evidence` links each stream with the current configuration (the shipped one first) and
   writes, for every post that reached the semantic stage, its best candidate by meaning and the
   evidence features: cosine, word overlap, margin, length ratio.
2. Each row is labelled: the candidate is the post's source when both come from the same article
   (a summary and its article, or two summaries of one article), or when a tweet judged a
   paraphrase has its headline or another such tweet as candidate.
3. A logistic model per edge kind (`summary` when the post is at most 0.6 as long as the candidate,
   `paraphrase` otherwise) is fitted on the fit part's rows by Newton's method with a small L2
   penalty, pooling the three streams. `--rounds 2` relinks with the fitted models and fits again,
   since which rows reach the semantic stage depends on the links already made.
4. Each kind's `min_probability` is chosen on the fit part by relinking with every value of a grid:
   the paraphrase threshold that gives the best tweet F1, then the lowest summary threshold whose
   false attribution stays at most --max-false (0.04) on every summary kind of the --constrain
   streams (the multi-sentence summaries by default; the one-line variant is reported beside them),
   and the paraphrase threshold is raised if no summary threshold gets there.
5. It prints the fitted models, their calibration on the validation rows, the sensitivity of every
   score to each threshold (fit and validation side by side), and the final scores, and writes the
   models as an `echotrace.toml` `[detector.semantic]` section to --out.
"""
import argparse
import math
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oneline_summaries  # noqa: E402
import split_scores  # noqa: E402

FEATURES = [
    "cosine",
    "word_overlap",
    "lead_cosine",
    "margin",
    "log_length_ratio",
]
THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


class Stream:
    def __init__(self, name: str, prefix: str, task: str):
        self.name, self.prefix, self.task = name, prefix, task
        self.truth = split_scores.read_truth(f"{prefix}.truth.tsv")


def source_item(post_id: str) -> str:
    """The article of a summary or article id (`bluesky:cnn-17-t0`, `news:cnn-17` give `cnn-17`)."""
    body = post_id.split(":", 1)[-1]
    return body.rsplit("-", 1)[0] if post_id.count("-") >= 2 else body


def relink(args, stream: Stream, config: str, tag: str, evidence: bool) -> str:
    links = os.path.join(args.work, f"{stream.name}.{tag}.links.tsv")
    command = [args.relink, f"{stream.prefix}.jsonl", "--cache", os.path.join(args.work, "cache"), "--links", links]
    if config:
        command += ["--config", config]
    if evidence:
        command += ["--evidence", os.path.join(args.work, f"{stream.name}.{tag}.evidence.tsv")]
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL if not args.verbose else None)
    return links


def labelled_rows(args, stream: Stream, tag: str) -> list:
    """(part, kind, features, label) for every evidence row of a relink."""
    path = os.path.join(args.work, f"{stream.name}.{tag}.evidence.tsv")
    if stream.task == "paraphrase":
        headline = {row["child_id"]: row["headline_id"] for row in stream.truth}
        positive = {row["child_id"] for row in stream.truth if row["label"] == "1"}
    rows = []
    for row in split_scores.read_truth(path):
        post, candidate = row["post_id"], row["candidate_id"]
        if stream.task == "paraphrase":
            item = headline.get(post, post)
            label = post in positive and (candidate == item or (candidate in positive and headline[candidate] == item))
        else:
            item = source_item(post)
            label = source_item(candidate) == item
        features = [float(row[name]) for name in FEATURES[:-1]] + [math.log(max(float(row["length_ratio"]), 1e-3))]
        rows.append((split_scores.part_of(item, 2, args.salt), row["kind"], features, int(label)))
    return rows


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights (bias first) maximizing the L2-penalized log-likelihood, by Newton's method."""
    design = np.hstack([np.ones((len(x), 1)), x])
    weights = np.zeros(design.shape[1])
    penalty = np.eye(design.shape[1]) * l2
    penalty[0, 0] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-design @ weights))
        gradient = design.T @ (y - p) - penalty @ weights
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        weights += step
        if np.abs(step).max() < 1e-8:
            break
    return weights


def predict(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(weights[0] + x @ weights[1:])))


def write_config(path: str, models: dict, thresholds: dict, encoder: str) -> None:
    with open(path, "w") as out:
        out.write("# Written by benches/fit_semantic.py: logistic models fitted on the dev streams' fit part.\n")
        out.write(f'[embed]\nencoder = "{encoder}"\n\n')
        out.write("[detector.semantic]\n")
        for kind in ("summary", "paraphrase"):
            weights = models[kind]
            terms = ", ".join(f"{name} = {value:.4f}" for name, value in zip(FEATURES, weights[1:]))
            out.write(
                f"{kind} = {{ bias = {weights[0]:.4f}, {terms}, min_probability = {thresholds[kind]:.2f} }}\n"
            )


def scores(args, streams: list, config: str, tag: str) -> dict:
    """Per stream and part: summaries {kind: (top-1, false)} or paraphrase (P, R, F1)."""
    result = {}
    for stream in streams:
        parent = split_scores.load_parents(relink(args, stream, config, tag, evidence=False))
        if stream.task == "summaries":
            counts = split_scores.summary_counts(parent, stream.truth, 2, args.salt)
            kinds = sorted({kind for part in counts.values() for (_, kind) in part})
            result[stream.name] = {}
            for part in counts:
                result[stream.name][part] = {
                    kind: split_scores.summary_scores(counts[part], kinds if kind == "all" else [kind])[:2]
                    for kind in kinds + ["all"]
                }
        else:
            result[stream.name] = split_scores.paraphrase_scores(parent, stream.truth, 2, args.salt)
    return result


def worst_false(result: dict, part: int, streams: list) -> float:
    """The highest false attribution of any summary kind of the given streams."""
    return max(false for name in streams for kind, (_, false) in result[name][part].items() if kind != "all")


def headline(result: dict, part: int) -> str:
    cells = []
    for name, parts in result.items():
        if isinstance(parts[part], dict):
            top1, false = parts[part]["all"]
            worst = max(f for k, (_, f) in parts[part].items() if k != "all")
            cells.append(f"{top1:.3f} / {false:.3f} (worst kind {worst:.3f})")
        else:
            cells.append(f"{parts[part][2]:.3f}")
    return " | ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with the dev streams (../shared/data)")
    parser.add_argument("--work", required=True, help="folder for the variant, the embedding cache and relinks")
    parser.add_argument("--relink", default="target/debug/relink")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--encoder", choices=["transformer", "static"], default="transformer")
    parser.add_argument(
        "--constrain",
        default="summaries",
        help="comma-separated summary streams whose every kind must keep false attribution within --max-false",
    )
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--max-false", type=float, default=0.04, help="false attribution allowed per kind (fit)")
    parser.add_argument("--salt", default="echotrace-split-v1")
    parser.add_argument("--out", help="where to write the fitted [detector.semantic] section")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    oneline = os.path.join(args.work, "summaries_cnn_dm_oneline")
    oneline_summaries.build_variant(os.path.join(args.data, "summaries_cnn_dm"), oneline)
    streams = [
        Stream("summaries", os.path.join(args.data, "summaries_cnn_dm"), "summaries"),
        Stream("oneline", oneline, "summaries"),
        Stream("tweets", os.path.join(args.data, "paraphrase_tweets_train"), "paraphrase"),
    ]
    out = args.out or os.path.join(args.work, "fitted.toml")

    config, thresholds = os.path.join(args.work, "start.toml"), {"summary": 0.5, "paraphrase": 0.5}
    with open(config, "w") as start:
        start.write(f'[embed]\nencoder = "{args.encoder}"\n')
    for round_number in range(1, args.rounds + 1):
        tag = f"round{round_number}"
        rows = []
        for stream in streams:
            relink(args, stream, config, tag, evidence=True)
            rows += [(stream.name, *row) for row in labelled_rows(args, stream, tag)]
        models = {}
        print(f"## Round {round_number}: models fitted on the fit part ({'shipped' if round_number == 1 else 'previous'} links)")
        print()
        print("| kind | rows fit / validation | positives fit | bias | " + " | ".join(FEATURES) + " | log loss fit / validation | Brier validation |")
        print("|---|---|---:|---:|" + "---:|" * len(FEATURES) + "---|---:|")
        for kind in ("summary", "paraphrase"):
            fit = [(x, y) for _, part, k, x, y in rows if k == kind and part == 0]
            validation = [(x, y) for _, part, k, x, y in rows if k == kind and part != 0]
            x_fit, y_fit = np.array([x for x, _ in fit]), np.array([y for _, y in fit], dtype=float)
            x_val, y_val = np.array([x for x, _ in validation]), np.array([y for _, y in validation], dtype=float)
            weights = fit_logistic(x_fit, y_fit, args.l2)
            models[kind] = weights

            def log_loss(x, y):
                p = np.clip(predict(weights, x), 1e-6, 1 - 1e-6)
                return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

            brier = float(np.mean((predict(weights, x_val) - y_val) ** 2))
            print(
                f"| {kind} | {len(fit)} / {len(validation)} | {int(y_fit.sum())} | {weights[0]:.3f} | "
                + " | ".join(f"{w:.3f}" for w in weights[1:])
                + f" | {log_loss(x_fit, y_fit):.3f} / {log_loss(x_val, y_val):.3f} | {brier:.3f} |"
            )
        print()
        print("Calibration on the validation rows (predicted probability against the share that was the source):")
        print()
        print("| kind | predicted | rows | mean predicted | observed |")
        print("|---|---|---:|---:|---:|")
        for kind in ("summary", "paraphrase"):
            validation = [(x, y) for _, part, k, x, y in rows if k == kind and part != 0]
            p = predict(models[kind], np.array([x for x, _ in validation]))
            y = np.array([y for _, y in validation], dtype=float)
            for low in np.arange(0.0, 1.0, 0.2):
                chosen = (p >= low) & (p < low + 0.2 + (1e-9 if low >= 0.8 else 0))
                if chosen.any():
                    print(
                        f"| {kind} | {low:.1f}–{low + 0.2:.1f} | {int(chosen.sum())} | "
                        f"{p[chosen].mean():.3f} | {y[chosen].mean():.3f} |"
                    )
        print()

        # Thresholds on the fit part, by relinking: paraphrase first (tweet F1), then summary.
        candidate = os.path.join(args.work, "candidate.toml")
        print(f"### Round {round_number}: sensitivity (columns: summaries top-1 / false, one-line top-1 / false, tweets F1)")
        print()
        print("| kind | min_probability | fit | validation |")
        print("|---|---:|---|---|")
        best_f1 = None
        for threshold in THRESHOLDS:
            write_config(candidate, models, {**thresholds, "paraphrase": threshold}, args.encoder)
            result = scores(args, streams, candidate, "sweep")
            print(f"| paraphrase | {threshold:.2f} | {headline(result, 0)} | {headline(result, 1)} |")
            f1 = result["tweets"][0][2]
            if best_f1 is None or f1 > best_f1[0]:
                best_f1 = (f1, threshold)
        thresholds["paraphrase"] = best_f1[1]
        chosen_summary = None
        while chosen_summary is None:
            for threshold in THRESHOLDS:
                write_config(candidate, models, {**thresholds, "summary": threshold}, args.encoder)
                result = scores(args, streams, candidate, "sweep")
                print(
                    f"| summary (paraphrase {thresholds['paraphrase']:.2f}) | {threshold:.2f} "
                    f"| {headline(result, 0)} | {headline(result, 1)} |"
                )
                if chosen_summary is None and worst_false(result, 0, args.constrain.split(",")) <= args.max_false:
                    chosen_summary = threshold
            if chosen_summary is None:
                stricter = [t for t in THRESHOLDS if t > thresholds["paraphrase"]]
                if not stricter:
                    sys.exit("no pair of thresholds keeps false attribution within --max-false on the fit part")
                thresholds["paraphrase"] = stricter[0]
        thresholds["summary"] = chosen_summary
        print()
        print(f"Chosen on the fit part: summary {thresholds['summary']:.2f}, paraphrase {thresholds['paraphrase']:.2f}")
        print()
        write_config(out, models, thresholds, args.encoder)
        config = out

    result = scores(args, streams, out, "final")
    print(f"## Final: {out}")
    print()
    with open(out) as fitted:
        print("```toml\n" + fitted.read() + "```")
    print()
    print("| stream | kind | fit | validation |")
    print("|---|---|---|---|")
    for name, parts in result.items():
        if isinstance(parts[0], dict):
            for kind in parts[0]:
                (t0, f0), (t1, f1) = parts[0][kind], parts[1][kind]
                print(f"| {name} | {kind} | {t0:.3f} / {f0:.3f} | {t1:.3f} / {f1:.3f} |")
        else:
            (p0, r0, f0), (p1, r1, f1) = parts[0], parts[1]
            print(f"| {name} | P / R / F1 | {p0:.3f} / {r0:.3f} / {f0:.3f} | {p1:.3f} / {r1:.3f} / {f1:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
