#!/usr/bin/env python3
"""What splitting the semantic window over shards would cost in links, measured on the dev streams.

    export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
    cargo build --release -p echotrace
    python3 benches/semantic_partition.py --data ../shared/data --work /tmp/echotrace-partition \\
        [--echotrace target/release/echotrace] [--config extra.toml] [--shards 4,8,16] [--seeds 5]

The linking indexes split into shards that keep every match whole: a simhash block, a MinHash band,
a canonical URL. The semantic window has no such key: two texts close in meaning can land anywhere
in the embedding space's coordinates. Issue 17 asks for a documented partition of the embedding
space, or a scatter-gather over shards, with its recall cost measured. This measures the candidates
on the dev streams, as the shipped configuration links them:

1. `echotrace replay` links each stream (the multi-sentence summaries, their one-line variant built
   by `oneline_summaries.py`, the tweets) and writes every post's chunk embeddings
   (`posts.embedding`). Every post linked by meaning (`parent_kind` summary or paraphrase) is a
   link the exact window made.
2. A link's evidence is the pair of chunks, one of the post and one of its parent, with the highest
   cosine: the pair the window's scan found. A partition keeps the link when the shard of the
   parent's chunk is among those the post's chunk asks.
3. The schemes, for S shards:
   - **scatter-gather by post id**: every shard holds the posts whose id hashes to it, and every
     query asks every shard and merges their top k. Exact (the top k of the union is among the
     shards' top k): it keeps every link, and each query scans the whole window, split S ways.
   - **random hyperplanes**: log2(S) hyperplanes through the origin (Charikar's sign hash, the
     simhash of the embedding), a chunk's shard the signs of its projections; a query asks its own
     cell, or also the cells one sign flip away for its least certain bits (multi-probe). Nothing is
     fitted; averaged over --seeds draws.
   - **k-means cells** (an inverted file, IVF): S centroids fitted (k-means++ seeding, then
     Lloyd's iterations) on the chunks of the fit part's posts, every chunk in its nearest
     centroid's shard, a query asking its n nearest centroids. Fitted on the fit part only, and judged on both, side by side: the split
     is by source item (an article, a headline) with `split_scores.py`'s salted hash, as for the
     fitted decision.
   Per scheme: the links kept (recall of the exact window's semantic links), the share of the window
   the linked posts' queries scan (the CPU of the scan, against 1.0 for one window), and the largest
   shard's load against the mean (a partition of the space does not balance itself).

What it does not measure: a lost parent can let a worse candidate through, so a partition also
changes which links are made, not only how many; the figures are the candidates' recall, an upper
bound on what a partition keeps.

It needs numpy and pyarrow, which `scripts/setup --test` installs.
"""
import argparse
import collections
import csv
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEMANTIC_KINDS = {"summary", "paraphrase"}
SALT = "echotrace-split-v1"


def part_of(item: str) -> int:
    # split_scores.py's: the fit part is 0 of 2.
    return int.from_bytes(hashlib.sha256(f"{SALT}:{item}".encode()).digest()[:8], "big") % 2


def items_of(truth: Path, stream: str) -> dict:
    """Each post's source item: its article for the summaries, its headline for the tweets."""
    items = {}
    with open(truth, newline="") as rows:
        for row in csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE):
            if stream == "tweets":
                items[row["child_id"]] = row["headline_id"]
                items[row["headline_id"]] = row["headline_id"]
            else:
                item = row["child_id"].split(":", 1)[1].rsplit("-", 1)[0]
                items[row["child_id"]] = item
                items[f"news:{item}"] = item
    return items


def replay(echotrace: Path, configs: list, stream_file: Path, out: Path) -> None:
    # Always replayed: output left by another configuration or build would be measured instead.
    shutil.rmtree(out, ignore_errors=True)
    command = [str(echotrace)]
    for config in configs:
        command += ["--config", str(config)]
    command += ["replay", "--input", str(stream_file), "--out", str(out)]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def load_stream(out: Path, items: dict):
    """Chunk matrix, each chunk's post index, each post's part, and the links as (post, parent)."""
    import numpy as np
    import pyarrow.dataset as ds

    table = ds.dataset(out / "posts", format="parquet").to_table(
        columns=["post_id", "parent_id", "parent_kind", "embedding"]).to_pydict()
    index = {}
    chunks, owner, parts = [], [], []
    for post_id, embedding in zip(table["post_id"], table["embedding"]):
        if not embedding:
            continue
        index[post_id] = len(parts)
        parts.append(part_of(items.get(post_id, post_id)))
        for vector in embedding:
            chunks.append(vector)
            owner.append(index[post_id])
    matrix = np.asarray(chunks, dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    owner = np.asarray(owner)
    links = [(index[post], index[parent]) for post, parent, kind in
             zip(table["post_id"], table["parent_id"], table["parent_kind"])
             if kind in SEMANTIC_KINDS and post in index and parent in index]
    return matrix, owner, np.asarray(parts), links


def evidence_pairs(matrix, owner, links):
    """For each link, the (post chunk, parent chunk) rows with the highest cosine."""
    import numpy as np

    rows_of = collections.defaultdict(list)
    for row, post in enumerate(owner):
        rows_of[post].append(row)
    pairs = []
    for post, parent in links:
        mine, theirs = np.asarray(rows_of[post]), np.asarray(rows_of[parent])
        cosines = matrix[mine] @ matrix[theirs].T
        best = np.unravel_index(np.argmax(cosines), cosines.shape)
        pairs.append((mine[best[0]], theirs[best[1]]))
    return np.asarray(pairs)


def hyperplane_scheme(matrix, shards: int, seed: int, flips: int):
    """Each chunk's cell, and the cells each chunk asks (its own and `flips` one-bit neighbours)."""
    import numpy as np

    bits = shards.bit_length() - 1
    planes = np.random.default_rng(seed).standard_normal((matrix.shape[1], bits)).astype(np.float32)
    projections = matrix @ planes
    signs = (projections > 0).astype(np.int64)
    cell = signs @ (1 << np.arange(bits))
    asked = [cell]
    least_certain = np.argsort(np.abs(projections), axis=1)
    for flip in range(flips):
        asked.append(cell ^ (1 << least_certain[:, flip]))
    return cell, np.stack(asked, axis=1)


def kmeans(points, clusters: int, seed: int, iterations: int = 50):
    """Centroids by k-means++ seeding and Lloyd's iterations. Written here rather than taken from
    scikit-learn, which reaches these machines only inside the benchmarks' venv with PyTorch
    (gigabytes, benches/compare.py): a dozen lines of numpy for one fit of S centroids."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centroids = [points[rng.integers(len(points))]]
    nearest = ((points - centroids[0]) ** 2).sum(axis=1)
    for _ in range(1, clusters):
        centroids.append(points[rng.choice(len(points), p=nearest / nearest.sum())])
        nearest = np.minimum(nearest, ((points - centroids[-1]) ** 2).sum(axis=1))
    centroids = np.asarray(centroids)
    for _ in range(iterations):
        assigned = np.argmax(points @ centroids.T - 0.5 * (centroids ** 2).sum(axis=1), axis=1)
        moved = np.asarray([points[assigned == c].mean(axis=0) if np.any(assigned == c) else centroids[c]
                            for c in range(clusters)])
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return centroids


def kmeans_scheme(matrix, fit_rows, shards: int, probes: int, seed: int):
    import numpy as np

    centroids = kmeans(matrix[fit_rows], shards, seed)
    # Nearest centroids by Euclidean distance: the largest x.c - |c|^2 / 2.
    order = np.argsort(-(matrix @ centroids.T - 0.5 * (centroids ** 2).sum(axis=1)), axis=1)
    return order[:, 0], order[:, :probes]


def judge(cell, asked, pairs, shards: int):
    """Links kept, share of the window scanned per query, largest shard against the mean."""
    import numpy as np

    kept = np.any(asked[pairs[:, 0]] == cell[pairs[:, 1]][:, None], axis=1)
    load = np.bincount(cell, minlength=shards) / len(cell)
    # A query scans the shards it asks: their share of the window's chunks, distinct cells only.
    scanned = np.mean([load[np.unique(row)].sum() for row in asked[pairs[:, 0]]])
    return kept, scanned, load.max() * shards


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="../shared/data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/echotrace-partition"))
    parser.add_argument("--echotrace", type=Path, default=REPO / "target" / "release" / "echotrace")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="configuration files after the defaults (e.g. deploy/static-encoder.toml)")
    parser.add_argument("--shards", default="4,8,16")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    import numpy as np

    args.work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    from oneline_summaries import build_variant

    oneline = args.work / "summaries_oneline"
    if not Path(f"{oneline}.jsonl").exists():
        build_variant(str(args.data / "summaries_cnn_dm"), str(oneline))
    streams = {
        "summaries": (args.data / "summaries_cnn_dm", "summaries"),
        "one-line": (oneline, "summaries"),
        "tweets": (args.data / "paraphrase_tweets_train", "tweets"),
    }
    shard_counts = [int(s) for s in args.shards.split(",")]
    print("| stream | scheme | shards | queries ask | window scanned per query | largest shard / mean "
          "| links kept, fit | links kept, validation |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for stream, (prefix, kind) in streams.items():
        out = args.work / stream
        replay(args.echotrace, args.config, Path(f"{prefix}.jsonl"), out)
        matrix, owner, parts, links = load_stream(out, items_of(Path(f"{prefix}.truth.tsv"), kind))
        pairs = evidence_pairs(matrix, owner, links)
        link_part = parts[owner[pairs[:, 0]]]
        counts = [int(np.sum(link_part == p)) for p in (0, 1)]
        print(f"| {stream} | exact window ({len(links)} links by meaning: fit {counts[0]}, validation "
              f"{counts[1]}; {len(matrix)} chunks) | 1 | all | 1.00 | — | 1.000 | 1.000 |")

        def row(scheme: str, shards: int, asks: str, results: list) -> None:
            kept = np.mean([r[0] for r in results], axis=0)
            scanned = np.mean([r[1] for r in results])
            largest = np.mean([r[2] for r in results])
            by_part = [kept[link_part == p].mean() for p in (0, 1)]
            print(f"| {stream} | {scheme} | {shards} | {asks} | {scanned:.2f} | {largest:.2f} "
                  f"| {by_part[0]:.3f} | {by_part[1]:.3f} |", flush=True)

        fit_rows = parts[owner] == 0
        for shards in shard_counts:
            print(f"| {stream} | scatter-gather by post id | {shards} | all {shards} | 1.00 (1/{shards} on "
                  f"each shard) | 1.00 | 1.000 | 1.000 |")
            for flips in (0, 1, 2):
                results = [judge(*hyperplane_scheme(matrix, shards, seed, flips), pairs, shards)
                           for seed in range(args.seeds)]
                row("random hyperplanes", shards, f"own cell + {flips} flipped", results)
            for probes in (1, 2, 3):
                results = [judge(*kmeans_scheme(matrix, fit_rows, shards, probes, seed), pairs, shards)
                           for seed in range(min(args.seeds, 3))]
                row("k-means cells, fitted on the fit part", shards, f"{probes} nearest", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
