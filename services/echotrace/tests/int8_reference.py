#!/usr/bin/env python3
"""The int8 model's vectors from Python onnxruntime on this machine, for tests/embedding.rs.

    int8_reference.py MODEL_DIR MAX_TOKENS < sentences.json > vectors.json

One text at a time (no padding), truncated at MAX_TOKENS, mean-pooled over the attention mask and
L2-normalized, as models/all-MiniLM-L6-v2/export.py computes the committed fixture. Computed here
because int8 kernels differ between processors (with and without VNNI) by more than 1e-3 in cosine,
so a reference taken on another machine cannot check this one to that tolerance."""
import json
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

model_dir, max_tokens = sys.argv[1], int(sys.argv[2])
tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
tokenizer.no_padding()
tokenizer.enable_truncation(max_length=max_tokens)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(f"{model_dir}/model.int8.onnx", options)
vectors = []
for text in json.load(sys.stdin):
    encoded = tokenizer.encode(text)
    feeds = {
        "input_ids": np.array([encoded.ids], dtype=np.int64),
        "attention_mask": np.array([encoded.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([encoded.type_ids], dtype=np.int64),
    }
    (hidden,) = session.run(["last_hidden_state"], feeds)
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    vectors.append([float(x) for x in pooled[0]])
json.dump(vectors, sys.stdout)
