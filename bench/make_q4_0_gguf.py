"""make_q4_0_gguf.py OUT.gguf [SEED] - a small random llama in GGUF Q4_0 whose
matrices have K % 256 == 0 (so lmx's CUDA backend repacks them), with the
tokenizer of models/stories260K.gguf. For greedy-text A/B runs of the Q4_0
device layout (LMX_CUDA_Q4_REPACK=0 vs 1); needs the `gguf` and numpy
packages, no llama.cpp."""
import sys
import numpy as np
import gguf

out = sys.argv[1]
rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
src = gguf.GGUFReader(sys.argv[3] if len(sys.argv) > 3 else "models/stories260K.gguf")
D, H, HKV, F, L = 512, 8, 4, 1024, 2
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
        w.add_key_value(name, vals, t, sub_type=et)
    elif t == gguf.GGUFValueType.STRING:
        w.add_key_value(name, bytes(f.parts[f.data[0]]).decode(), t)
    else:
        w.add_key_value(name, f.parts[f.data[0]][0].item(), t)
V = int(next(f for n, f in src.fields.items() if n == "tokenizer.ggml.tokens").data.__len__())


def q4(name, n, k, std):
    a = (rng.standard_normal((n, k)) * std).astype(np.float32)
    q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_0)


def f32(name, n):
    w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))


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
q4("output.weight", V, D, 0.3)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {out}: llama D={D} F={F} L={L} vocab={V}, Q4_0")
