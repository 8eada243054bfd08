"""make_q4_0_gguf.py OUT.gguf [SEED [SRC.gguf [SHAPE]]] - a random llama in GGUF
Q4_0 whose matrices have K % 256 == 0 (so lmx's CUDA backend repacks them),
with the tokenizer of models/stories260K.gguf (vocab 512). SHAPE "tiny"
(default: D 512, F 1024, 2 layers, weights quantized from normal draws with
gguf.quants) is for greedy-text A/B runs of the Q4_0 device layout
(LMX_CUDA_Q4_REPACK=0 vs 1); "1b" (llama-3.2-1B's layers: D 2048, F 8192,
16 layers, 32/8 heads; random nibbles, scales 0.002..0.01: seconds, not
minutes) is for decode timing of the layers (the vocab stays 512, so the
lm_head is negligible). Q6_K variants (the llama-quantize Q4_0 files keep the
output matrix in Q6_K; gguf.quants cannot quantize K-quants, so those are
random valid Q6_K blocks: random ql/qh/scale bytes, f16 d in 1e-4..4e-4):
"1b-q6" is "1b" with llama-3.2-1B's full-vocab tied embedding, a Q6_K
token_embd [128256, 2048] and no output.weight (the tokenizer's arrays are
padded with dummy tokens to 128256), for decode timing of the Q6_K lm_head
and get_rows; "tiny-q6" (D 2048, F 1024, 1 layer, 16/4 heads, Q4_0 from
normal draws, vocab 512) has a Q6_K output.weight [512, 2048], for
greedy-text A/B runs of the Q6_K device layout (LMX_CUDA_Q6_REPACK=0 vs 1).
Needs the `gguf` and numpy packages, no llama.cpp."""
import sys
import numpy as np
import gguf

out = sys.argv[1]
rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
src = gguf.GGUFReader(sys.argv[3] if len(sys.argv) > 3 else "models/stories260K.gguf")
shape = sys.argv[4] if len(sys.argv) > 4 else "tiny"
D, H, HKV, F, L = {"1b": (2048, 32, 8, 8192, 16), "1b-q6": (2048, 32, 8, 8192, 16),
                   "tiny-q6": (2048, 16, 4, 1024, 1)}.get(shape, (512, 8, 4, 1024, 2))
VQ6 = 128256 if shape == "1b-q6" else 0  # padded vocab (the Q6_K tied embedding's rows)
hd = D // H
w = gguf.GGUFWriter(out, "llama")
w.add_context_length(512)
w.add_embedding_length(D)
w.add_block_count(L)
w.add_feed_forward_length(F)
w.add_head_count(H)
w.add_head_count_kv(HKV)
w.add_rope_dimension_count(hd)
w.add_layer_norm_rms_eps(1e-5)
w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
for name, f in src.fields.items():
    if not name.startswith("tokenizer."):
        continue
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        et = f.types[1]
        if et == gguf.GGUFValueType.STRING:
            vals = [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        else:
            vals = [f.parts[i][0].item() for i in f.data]
        if VQ6 and len(vals) < VQ6 and name in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                  "tokenizer.ggml.token_type"):
            n0 = len(vals)  # dummy tokens up to the embedding's rows: normal type, lowest score
            pad = {"tokenizer.ggml.tokens": [f"<pad{i}>" for i in range(n0, VQ6)],
                   "tokenizer.ggml.scores": [-1e9] * (VQ6 - n0),
                   "tokenizer.ggml.token_type": [1] * (VQ6 - n0)}[name]
            vals = vals + pad
        w.add_key_value(name, vals, t, sub_type=et)
    elif t == gguf.GGUFValueType.STRING:
        w.add_key_value(name, bytes(f.parts[f.data[0]]).decode(), t)
    else:
        w.add_key_value(name, f.parts[f.data[0]][0].item(), t)
V = int(next(f for n, f in src.fields.items() if n == "tokenizer.ggml.tokens").data.__len__())


def q6(name, n, k):  # random valid Q6_K blocks (210 bytes: ql, qh, int8 scales, f16 d)
    q = rng.integers(0, 256, size=(n, k // 256, 210), dtype=np.uint8)
    d = rng.uniform(1e-4, 4e-4, size=(n, k // 256)).astype(np.float16)
    q[:, :, 208:210] = d.view(np.uint8).reshape(n, k // 256, 2)
    q = q.reshape(n, k // 256 * 210)
    w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q6_K)


def q4(name, n, k, std):
    if shape.startswith("1b"):  # random blocks: nibbles uniform, f16 scales in [0.002, 0.01]
        q = rng.integers(0, 256, size=(n, k // 32, 18), dtype=np.uint8)
        d = rng.uniform(0.002, 0.01, size=(n, k // 32)).astype(np.float16)
        q[:, :, 0:2] = d.view(np.uint8).reshape(n, k // 32, 2)
        q = q.reshape(n, k // 32 * 18)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        return
    a = (rng.standard_normal((n, k)) * std).astype(np.float32)
    q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_0)


def f32(name, n):
    w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))


if VQ6:
    q6("token_embd.weight", VQ6, D)
else:
    q4("token_embd.weight", V, D, 1.0)
for l in range(L):
    p = f"blk.{l}."
    f32(p + "attn_norm.weight", D)
    q4(p + "attn_q.weight", D, D, 0.08)
    q4(p + "attn_k.weight", HKV * hd, D, 0.08)
    q4(p + "attn_v.weight", HKV * hd, D, 0.08)
    q4(p + "attn_output.weight", D, D, 0.05)
    f32(p + "ffn_norm.weight", D)
    q4(p + "ffn_gate.weight", F, D, 0.06)
    q4(p + "ffn_up.weight", F, D, 0.06)
    q4(p + "ffn_down.weight", D, F, 0.04)
f32("output_norm.weight", D)
if shape == "tiny-q6":
    q6("output.weight", V, D)
elif not VQ6:  # 1b-q6: tied (no output.weight), as llama-3.2-1B
    q4("output.weight", V, D, 0.3)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {out}: llama D={D} F={F} L={L} vocab={VQ6 or V}, Q4_0 ({shape})")
