#!/usr/bin/env python3
"""Logits of an MLX folder per mlx-lm (model only, no tokenizer), in f32:
mlx_logits.py MODEL_DIR TOKENS(comma list) OUT.safetensors
(test_interop.py imports logits() to save a Python start per case)."""
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.utils import load_model


def logits(path, toks):
    model, _ = load_model(Path(path))
    out = model(mx.array(toks)[None]).astype(mx.float32)[0]
    return np.array(out)


if __name__ == "__main__":
    toks = [int(t) for t in sys.argv[2].split(",")]
    mx.save_safetensors(sys.argv[3], {"logits": mx.array(logits(sys.argv[1], toks))})
