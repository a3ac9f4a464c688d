#!/usr/bin/env python3
"""Merges dev streams into one, in event-time order, for end-to-end throughput runs.

    python3 benches/mix_streams.py OUT.jsonl ../shared/data/threads_rumoureval.jsonl \\
        ../shared/data/paraphrase_tweets_train.jsonl ../shared/data/summaries_cnn_dm.jsonl

Each input is one JSON post per line; the output holds every line once, sorted by `created_at`
(ties keep the inputs' order), so the streams interleave as if one platform carried them all.
"""
import json
import sys


def main() -> int:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    lines = []
    for path in sys.argv[2:]:
        with open(path) as stream:
            lines += [(json.loads(line)["created_at"], line) for line in stream if line.strip()]
    lines.sort(key=lambda pair: pair[0])
    with open(sys.argv[1], "w") as out:
        out.writelines(line if line.endswith("\n") else line + "\n" for _, line in lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
