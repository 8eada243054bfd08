#!/usr/bin/env python3
"""A target/draft pair of one family for measuring speculative decoding.

    python3 bench/make_speculative_pair.py --out /tmp/spec   # writes /tmp/spec/{target,draft}

Random-weight models never agree with each other, so a real draft/target
pair (a small model distilled from a large one) is imitated: the target is
the synthetic llama-1b (bench/make_synthetic_model.py: same shape, seed,
tokenizer) except that the output projections (o_proj, down_proj) of its
layers >= DRAFT_LAYERS are scaled by --deep-scale, so the first layers
dominate its residual stream; the draft is those first DRAFT_LAYERS layers
with the same embedding, final norm and (tied) head. Every layer of the
target still costs full bandwidth and compute, so the measured speed-up is
what a draft with this acceptance rate buys; report the acceptance with it.
"""
import argparse, json, os, shutil

import numpy as np

import make_synthetic_model as msm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--draft-layers", type=int, default=2)
    ap.add_argument("--deep-scale", type=float, default=0.005)
    args = ap.parse_args()
    cfg = dict(msm.SHAPES["llama-1b"])
    rng = np.random.default_rng(1234)
    dirs = {k: os.path.join(args.out, k) for k in ("target", "draft")}
    items = {k: [] for k in dirs}
    for name, shape in msm.tensors(cfg):
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else -1
        deep = layer >= args.draft_layers
        std = 0.02 * (args.deep_scale if deep and name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0)
        data = np.full(shape, 0x3F80, dtype=np.uint16).tobytes() if len(shape) == 1 else msm.bf16_bytes(rng, shape, std)
        items["target"].append((name, shape, data))
        if not deep:
            items["draft"].append((name, shape, data))
    here = os.path.dirname(os.path.abspath(__file__))
    for k, d in dirs.items():
        os.makedirs(d, exist_ok=True)
        msm.write_shard(os.path.join(d, "model.safetensors"), items[k])
        c = dict(cfg)
        if k == "draft":
            c["num_hidden_layers"] = args.draft_layers
        config = dict(architectures=["LlamaForCausalLM"], model_type="llama", max_position_embeddings=131072,
                      rms_norm_eps=1e-5, rope_theta=500000.0, hidden_act="silu", bos_token_id=128000,
                      eos_token_id=[128001, 128008, 128009], torch_dtype="bfloat16", **c)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        tok = os.path.join(here, "..", "tests", "data", "tokenizers", "llama3")
        import gzip
        with gzip.open(os.path.join(tok, "tokenizer.json.gz")) as src, open(os.path.join(d, "tokenizer.json"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        shutil.copy(os.path.join(tok, "tokenizer_config.json"), d)
        print(f"wrote {d}: {sum(len(x[2]) for x in items[k]) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
