#!/usr/bin/env python3
"""Logits of an MLX folder per mlx-lm (model only, no tokenizer), in f32:
mlx_logits.py MODEL_DIR TOKENS(comma list) OUT.safetensors"""
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.utils import load_model

model, _ = load_model(Path(sys.argv[1]))
toks = [int(t) for t in sys.argv[2].split(",")]
out = model(mx.array(toks)[None]).astype(mx.float32)[0]
mx.save_safetensors(sys.argv[3], {"logits": out})
