#!/usr/bin/env python3
"""mlx_lm.convert without a tokenizer (the HF fixtures have none): the same
load → cast → quantize_model → save_model/save_config path convert() takes.
Usage: mlx_convert.py SRC DST [--bits B] [--group G] [--mode M] [--recipe mixed_x_y] [--no-quant]
(test_interop.py imports convert() to save a Python start per case)."""
import argparse
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_map_with_path
from mlx_lm.convert import MODEL_CONVERSION_DTYPES, mixed_quant_predicate_builder
from mlx_lm.utils import load_model, quantize_model, save_config, save_model


def convert(src, dst, bits=None, group=None, mode="affine", recipe=None, no_quant=False):
    model, config = load_model(Path(src), lazy=True)
    dtype = config.get("torch_dtype", None)
    if dtype in MODEL_CONVERSION_DTYPES:
        dt = getattr(mx, dtype)
        model.update(tree_map_with_path(lambda k, v: v.astype(dt) if mx.issubdtype(v.dtype, mx.floating) else v,
                                        model.parameters()))
    pred = mixed_quant_predicate_builder(recipe, model, group) if recipe else None
    if not no_quant:
        model, config = quantize_model(model, config, group, bits, mode=mode, quant_predicate=pred)
    save_model(Path(dst), model, donate_model=True)
    save_config(config, config_path=Path(dst) / "config.json")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--bits", type=int, default=None)
    ap.add_argument("--group", type=int, default=None)
    ap.add_argument("--recipe", default=None)
    ap.add_argument("--mode", default="affine")
    ap.add_argument("--no-quant", action="store_true")
    a = ap.parse_args()
    convert(a.src, a.dst, a.bits, a.group, a.mode, a.recipe, a.no_quant)
