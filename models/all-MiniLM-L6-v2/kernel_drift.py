#!/usr/bin/env python3
"""How far the model's vectors move between processors: ONNX Runtime picks its matrix kernels by
the instruction sets it finds (AVX2, AVX-512, AVX-512 VNNI), and an int8 model can give different
numbers on each.

    kernel_drift.py embed MODEL.onnx TEXTS.json OUT.npy
    kernel_drift.py compare REFERENCE.npy OTHER.npy [LABEL]

`embed` runs the model one text at a time (no padding, one thread) over a JSON list of texts,
tokenized with the `tokenizer.json` beside the model, truncated at 256 tokens, mean-pooled and
L2-normalized as echotrace does, and saves the vectors. `compare` prints the cosine between the two
runs' vectors of each text (min, 1st percentile, mean) and the largest difference of a component.

`measure-kernels` beside this file runs `embed` natively and under `qemu-x86_64 -cpu MODEL`, which
emulates a processor without AVX-512, so one machine measures both kernel families."""
import json
import sys
from pathlib import Path

import numpy as np

MAX_TOKENS = 256


def embed(model: Path, texts_path: Path, out: Path) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model.parent / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options)
    vectors = []
    for text in json.loads(texts_path.read_text()):
        encoded = tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([encoded.ids], dtype=np.int64),
            "attention_mask": np.array([encoded.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoded.type_ids], dtype=np.int64),
        }
        (hidden,) = session.run(["last_hidden_state"], feeds)
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        vectors.append(pooled[0] / max(float(np.linalg.norm(pooled[0])), 1e-12))
    np.save(out, np.stack(vectors).astype(np.float32))


def compare(reference: Path, other: Path, label: str) -> None:
    a, b = np.load(reference).astype(np.float64), np.load(other).astype(np.float64)
    cosines = (a * b).sum(axis=1)
    print(
        f"{label:<40} texts {len(a):>5}  cosine min {cosines.min():.7f}  p01 {np.percentile(cosines, 1):.7f}"
        f"  mean {cosines.mean():.7f}  max |component diff| {np.abs(a - b).max():.2e}"
    )


def main() -> int:
    if len(sys.argv) >= 5 and sys.argv[1] == "embed":
        embed(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else sys.argv[3])
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
