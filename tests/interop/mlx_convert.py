#!/usr/bin/env python3
"""mlx_lm.convert without a tokenizer (the HF fixtures have none): the same
load → cast → quantize_model → save_model/save_config path convert() takes.
Usage: mlx_convert.py SRC DST [--bits B] [--group G] [--recipe mixed_x_y] [--no-quant]"""
import argparse
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_map_with_path
from mlx_lm.convert import MODEL_CONVERSION_DTYPES, mixed_quant_predicate_builder
from mlx_lm.utils import load_model, quantize_model, save_config, save_model

ap = argparse.ArgumentParser()
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--bits", type=int, default=None)
ap.add_argument("--group", type=int, default=None)
ap.add_argument("--recipe", default=None)
ap.add_argument("--no-quant", action="store_true")
a = ap.parse_args()
model, config = load_model(Path(a.src), lazy=True)
dtype = config.get("torch_dtype", None)
if dtype in MODEL_CONVERSION_DTYPES:
    dt = getattr(mx, dtype)
    model.update(tree_map_with_path(lambda k, v: v.astype(dt) if mx.issubdtype(v.dtype, mx.floating) else v,
                                    model.parameters()))
pred = mixed_quant_predicate_builder(a.recipe, model, a.group) if a.recipe else None
if not a.no_quant:
    model, config = quantize_model(model, config, a.group, a.bits, quant_predicate=pred)
save_model(Path(a.dst), model, donate_model=True)
save_config(config, config_path=Path(a.dst) / "config.json")
