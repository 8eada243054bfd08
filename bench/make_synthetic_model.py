#!/usr/bin/env python3
"""Writes deterministic random-weight models of real shapes for benchmarks.

    python3 bench/make_synthetic_model.py --shape llama-1b --out /tmp/llama-1b

Shapes: llama-1b (Llama-3.2-1B: hidden 2048, 16 layers, 32 heads, 8 KV heads,
FFN 8192, vocab 128256, tied) and llama-8b (Llama-3-8B: hidden 4096, 32
layers, 32/8 heads, FFN 14336, vocab 128256, untied). Output: an HF folder
(config.json, model-0000N-of-0000M.safetensors + index, bf16 weights) with the
real Llama 3 tokenizer from tests/data so text prompts work. Weights are
N(0, 0.02) from a fixed seed (norms 1.0), so every run writes identical
bytes; the text they generate is meaningless, the speed is real.
Needs only numpy. --torch-device cuda draws the weights with torch on that
device instead (minutes faster for llama-8b; different, but also fixed-seed,
weights; the default numpy output is unchanged).
"""
import argparse, json, os, shutil, struct, gzip

import numpy as np

SHAPES = {
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, head_dim=64),
    "llama-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False, head_dim=128),
}
SHARD_BYTES = 2 << 30


def bf16_bytes(rng, shape, std):
    x = (rng.standard_normal(size=shape, dtype=np.float32) * std).view(np.uint32)
    # round to nearest even, as every bf16 converter does
    x = (x + 0x7FFF + ((x >> 16) & 1)) >> 16
    return x.astype(np.uint16).tobytes()


def bf16_bytes_torch(gen, shape, std, device):
    import torch
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std
    return x.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()  # .to rounds to nearest even


def tensors(cfg):
    D, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd, H, K = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    yield "model.embed_tokens.weight", (V, D)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", (D,)
        yield p + "self_attn.q_proj.weight", (H * hd, D)
        yield p + "self_attn.k_proj.weight", (K * hd, D)
        yield p + "self_attn.v_proj.weight", (K * hd, D)
        yield p + "self_attn.o_proj.weight", (D, H * hd)
        yield p + "post_attention_layernorm.weight", (D,)
        yield p + "mlp.gate_proj.weight", (F, D)
        yield p + "mlp.up_proj.weight", (F, D)
        yield p + "mlp.down_proj.weight", (D, F)
    yield "model.norm.weight", (D,)
    if not cfg["tie_word_embeddings"]:
        yield "lm_head.weight", (V, D)


def write_shard(path, items, dtype="BF16"):
    header, off = {}, 0
    for name, shape, data in items:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, data in items:
            f.write(data)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, default="llama-1b")
    ap.add_argument("--out", required=True)
    ap.add_argument("--torch-device", default=None, help="draw weights with torch on this device (e.g. cuda)")
    args = ap.parse_args()
    cfg = dict(SHAPES[args.shape])
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(1234)
    if args.torch_device:
        import torch
        gen = torch.Generator(device=args.torch_device)
        gen.manual_seed(1234)
    shards, cur, cur_bytes, weight_map, total = [], [], 0, {}, 0
    for name, shape in tensors(cfg):
        if len(shape) == 1:
            data = np.full(shape, 0x3F80, dtype=np.uint16).tobytes()  # 1.0 in bf16
        elif args.torch_device:
            data = bf16_bytes_torch(gen, shape, 0.02, args.torch_device)
        else:
            data = bf16_bytes(rng, shape, 0.02)
        if cur and cur_bytes + len(data) > SHARD_BYTES:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append((name, shape, data))
        cur_bytes += len(data)
        total += len(data)
        if cur_bytes > SHARD_BYTES:
            shards.append(cur)
            cur, cur_bytes = [], 0
    if cur:
        shards.append(cur)
    for i, items in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_shard(os.path.join(args.out, fn), items)
        for name, _, _ in items:
            weight_map[name] = fn
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", max_position_embeddings=131072,
                  rms_norm_eps=1e-5, rope_theta=500000.0, hidden_act="silu", attention_bias=False,
                  mlp_bias=False, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
                  torch_dtype="bfloat16",
                  rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                    high_freq_factor=4.0, original_max_position_embeddings=8192), **cfg)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    here = os.path.dirname(os.path.abspath(__file__))
    tok = os.path.join(here, "..", "tests", "data", "tokenizers", "llama3")
    if os.path.exists(os.path.join(tok, "tokenizer.json.gz")):
        with gzip.open(os.path.join(tok, "tokenizer.json.gz")) as src, \
                open(os.path.join(args.out, "tokenizer.json"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        shutil.copy(os.path.join(tok, "tokenizer_config.json"), args.out)
    print(f"wrote {args.out}: {total / 1e9:.2f} GB of bf16 weights in {len(shards)} shard(s)")


if __name__ == "__main__":
    main()
