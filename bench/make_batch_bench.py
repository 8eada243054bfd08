#!/usr/bin/env python3
"""A small random llama and prompt files for measuring batch generation.

    python3 bench/make_batch_bench.py --out /tmp/llama-95m
    lmx generate --model /tmp/llama-95m --prompts-file /tmp/llama-95m/prompts64.txt --batch-size 16 -m 32

bench/make_synthetic_model.py writes real-size shapes (1B, 8B) in bf16; batch
generation on the 2-core box needs something much smaller, so this writes a
llama of --hidden/--layers (default: hidden 1024, 8 layers, 16 heads, 8 KV
heads, FFN 2816, vocab 512: 95.4M parameters, f32, 382 MB) with the
stories260K tokenizer (tests/data/stories260K/chat/tokenizer.json, 512 ids,
no chat template: prompts are encoded raw with BOS). Weights are
N(0, 0.02) from a fixed seed (norms 1.0), so every run writes identical bytes.

Prompt files prompts16.txt and prompts64.txt hold 16 / 64 lines of random
words from a fixed list, --min-words..--max-words words each (default
20..120, about 40..250 tokens), so prefill is a real part of the run.
Needs only numpy.
"""
import argparse, json, os, shutil

import numpy as np

from make_synthetic_model import write_shard  # same folder

WORDS = ("once upon a time there was little girl named lily she liked to play with her ball in the park "
         "one day saw big dog and was happy they ran together sun shining bright mom said come home "
         "for dinner tom wanted toy car but it broken friend helped fix tree bird sang song").split()


def tensors(D, F, V, L, H, K, hd):
    yield "model.embed_tokens.weight", (V, D)
    for l in range(L):
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
    yield "lm_head.weight", (V, D)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--min-words", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=120)
    args = ap.parse_args()
    D, L = args.hidden, args.layers
    hd = 64
    H, K = D // hd, max(1, D // hd // 2)
    F = (int(D * 8 / 3) + 255) // 256 * 256
    V = 512
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(1234)
    items, total = [], 0
    for name, shape in tensors(D, F, V, L, H, K, hd):
        if len(shape) == 1:
            data = np.ones(shape, dtype=np.float32).tobytes()
        else:
            data = (rng.standard_normal(size=shape, dtype=np.float32) * 0.02).tobytes()
        items.append((name, shape, data))
        total += int(np.prod(shape))
    write_shard(os.path.join(args.out, "model.safetensors"), items, "F32")
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=D, intermediate_size=F,
                  num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=K, head_dim=hd, vocab_size=V,
                  max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, torch_dtype="float32")
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, "..", "tests", "data", "stories260K", "chat", "tokenizer.json"), args.out)
    prng = np.random.default_rng(7)
    for n in (16, 64):
        with open(os.path.join(args.out, f"prompts{n}.txt"), "w") as f:
            for _ in range(n):
                k = int(prng.integers(args.min_words, args.max_words + 1))
                f.write(" ".join(WORDS[int(i)] for i in prng.integers(0, len(WORDS), size=k)) + "\n")
    print(f"wrote {args.out}: {total / 1e6:.1f}M parameters (f32), prompts16.txt, prompts64.txt")


if __name__ == "__main__":
    main()
