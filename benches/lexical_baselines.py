#!/usr/bin/env python3
"""The lexical path done by well-known Python libraries, as whole processes for `benches/compare.py`.

    python3 benches/lexical_baselines.py datasketch STREAM.jsonl PAIRS.tsv
    python3 benches/lexical_baselines.py simhash STREAM.jsonl PAIRS.tsv

Each process does what `lexical-link` (benches/src/bin/lexical-link.rs) does, with the library's own
index in place of echotrace's: every line of the stream is decoded, its text normalized into the
same features echotrace uses (word unigrams, CJK character bigrams, URLs and @mentions dropped;
posts with fewer than 5 features skipped), looked up against every earlier post, then added. It
writes `child<TAB>parent` (0-based line numbers) for each near-duplicate found and prints posts,
pairs and seconds as one JSON object.

- `datasketch`: `MinHash` with echotrace's signature size (18 values) and `MinHashLSH` with its
  banding (6 bands of 3 rows); each candidate is checked by its estimated Jaccard (>= 0.6), as
  `MinHashIndex::similar` does.
- `simhash`: the `simhash` package's 64-bit `Simhash` over the same features and its `SimhashIndex`
  at distance 3 (`k + 1` block tables, echotrace's `NearDupIndex` design).

The normalization is a close copy of `prepare/normalize.rs`, not the same code: the pairs each method finds
are compared with the exhaustive scan's in `compare.py`'s table, so a difference shows.
"""

import json
import re
import sys
import time
import unicodedata

MIN_FEATURES = 5
MIN_JACCARD = 0.6
SIGNATURE_LEN = 18
BANDS, ROWS = 6, 3
MAX_HAMMING = 3
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
TOKEN = re.compile(r"[^\W_]+")


def features(text: str) -> list[str]:
    """Word unigrams and CJK character bigrams of a text, as `prepare/normalize.rs` and `prepare/fingerprint.rs`."""
    text = unicodedata.normalize("NFKC", text).lower()
    out = []
    for chunk in text.split():
        if chunk.startswith("@") or chunk.startswith("www."):
            continue
        for scheme in ("http://", "https://"):
            cut = chunk.find(scheme)
            if cut >= 0:
                chunk = chunk[:cut]
        chunk = chunk.replace("'", "").replace("\u2019", "")
        for token in TOKEN.findall(chunk):
            pieces = CJK.split(token)
            out.extend(piece for piece in pieces if piece)
            for run in CJK.findall(token):
                out.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return out


def posts(path: str, lines: list[int]):
    """(line number, features) of every post with enough features to link by similarity; counts
    the lines read into `lines[0]`."""
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream):
            lines[0] = number + 1
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError):
                continue
            found = features(text)
            if len(found) >= MIN_FEATURES:
                yield number, found


def with_datasketch(path: str, pairs, lines):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=MIN_JACCARD, num_perm=SIGNATURE_LEN, params=(BANDS, ROWS))
    stored = {}
    for number, found in posts(path, lines):
        signature = MinHash(num_perm=SIGNATURE_LEN, seed=1)
        signature.update_batch([feature.encode() for feature in found])
        parents = [key for key in lsh.query(signature) if signature.jaccard(stored[key]) >= MIN_JACCARD]
        pairs.extend((number, parent) for parent in parents)
        lsh.insert(number, signature, check_duplication=False)
        stored[number] = signature


def with_simhash(path: str, pairs, lines):
    from simhash import Simhash, SimhashIndex

    index = SimhashIndex([], f=64, k=MAX_HAMMING)
    for number, found in posts(path, lines):
        fingerprint = Simhash(found, f=64)
        pairs.extend((number, int(parent)) for parent in index.get_near_dups(fingerprint))
        index.add(str(number), fingerprint)


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in ("datasketch", "simhash"):
        sys.exit(__doc__)
    started = time.perf_counter()
    method, stream, out = sys.argv[1:]
    pairs: list[tuple[int, int]] = []
    lines = [0]
    (with_datasketch if method == "datasketch" else with_simhash)(stream, pairs, lines)
    counted = 0
    with open(out, "w") as file:
        for child, parent in sorted(set(pairs)):
            file.write(f"{child}\t{parent}\n")
            counted += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"posts": lines[0], "pairs": counted, "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
