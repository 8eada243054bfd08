#!/usr/bin/env python3
"""Interop with mlx-lm itself (ctest label "interop").

1. mlx-lm loads what `lmx convert -q` writes and gives the same logits as lmx (1e-4 of max|logit|).
2. lmx loads what mlx-lm's convert path writes (tests/interop/mlx_convert.py: mlx_lm.convert minus the
   tokenizer, which the fixtures lack) and gives mlx-lm's logits.
3. Both writers produce the same tensors: header JSON entries (names, dtypes, shapes; sorted keys,
   {"format": "mlx"} metadata, no padding) and every tensor's bytes identical, same file size, same
   model.safetensors.index.json and config.json. The files are not byte-identical: mx.save_safetensors
   lays the data out in the iteration order of a C++ std::unordered_map (see docs/FORMATS.md,
   "Byte-identical shards"), so only the data_offsets differ.
Cases: affine 4/8-bit, tied, a mixed recipe, MoE (qwen3_moe and mixtral: experts stacked into
switch_mlp as mlx-lm's sanitize does), and the fp modes mxfp4 / nvfp4 / mxfp8.
Installs mlx[cpu] and mlx-lm with pip when missing; exits 77 (ctest SKIP) with the reason if it cannot.
Usage: test_interop.py LMX_BINARY SOURCE_DIR"""
import json
import os
import struct
import subprocess
import sys
import tempfile

lmx, src = sys.argv[1], sys.argv[2]
here = os.path.join(src, "tests", "interop")
from mlx_env import require_mlx  # noqa: E402 (this folder)

require_mlx()
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(src, "tests", "interop"))
import mlx_convert  # noqa: E402
import mlx_logits  # noqa: E402

TOKS = "5,17,99,3,200,42,7,128,64,250,11,33"
fail = 0


def sh(*a):
    r = subprocess.run(list(a), capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(" ".join(a) + "\n" + r.stdout + r.stderr)
    return r.stdout


def read_st(path):
    d = open(path, "rb").read()
    n = struct.unpack("<Q", d[:8])[0]
    h = json.loads(d[8 : 8 + n])
    meta = h.pop("__metadata__", None)
    return meta, {k: (v["dtype"], v["shape"], d[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]]) for k, v in h.items()}


def header_entries(path):
    """The header JSON as written, with data_offsets blanked, and the file size."""
    d = open(path, "rb").read()
    n = struct.unpack("<Q", d[:8])[0]
    h = json.loads(d[8 : 8 + n])
    for k, v in h.items():
        if k != "__metadata__":
            v.pop("data_offsets")
    return list(h.items())


def logits(path, tmp, who):
    out = os.path.join(tmp, who + "_" + os.path.basename(path) + ".safetensors")
    if who == "lmx":
        sh(lmx, "logits", "--model", path, "--tokens", TOKS, "--out", out)
    else:
        return mlx_logits.logits(path, [int(t) for t in TOKS.split(",")])
    _, t = read_st(out)
    dt, shape, b = t["logits"]
    return np.frombuffer(b, np.float32).reshape(shape)


def close(a, b, what):
    global fail
    d = float(np.abs(a - b).max())
    m = float(np.abs(b).max())
    ok = d <= 1e-4 * m
    print(f"  {what:55s} max|d| {d:.3g} of {m:.3g} {'ok' if ok else 'FAIL'}")
    fail += not ok


with tempfile.TemporaryDirectory() as tmp:
    for case, flags, mflags in [
        ("llama", [], {}),
        ("llama", ["--q-bits", "8", "--q-group-size", "32"], dict(bits=8, group=32)),
        ("llama_tied", ["--q-group-size", "32"], dict(group=32)),
        ("qwen3", ["--quant-predicate", "mixed_3_6", "--q-group-size", "32"], dict(recipe="mixed_3_6", group=32)),
        ("qwen3_moe", [], {}),
        ("mixtral", ["--q-group-size", "32"], dict(group=32)),
        ("mixtral", ["--q-bits", "8", "--q-group-size", "32", "--quant-predicate", "mixed_4_6"],
         dict(bits=8, group=32, recipe="mixed_4_6")),
        ("llama", ["--q-mode", "mxfp4"], dict(mode="mxfp4")),
        ("llama", ["--q-mode", "nvfp4"], dict(mode="nvfp4")),
        ("llama", ["--q-mode", "mxfp8"], dict(mode="mxfp8")),
    ]:
        fx = os.path.join(src, "tests", "data", "hf", case)
        tag = case + "_" + "_".join(flags).replace("-", "")
        a = os.path.join(tmp, "lmx_" + tag)
        b = os.path.join(tmp, "mlx_" + tag)
        print(sh(lmx, "convert", "--hf-path", fx, "--mlx-path", a, "-q", *flags).strip().splitlines()[-1])
        mlx_convert.convert(fx, b, **mflags)
        close(logits(a, tmp, "mlx"), logits(a, tmp, "lmx"), f"{tag}: lmx-written, mlx-lm vs lmx")
        close(logits(b, tmp, "lmx"), logits(b, tmp, "mlx"), f"{tag}: mlx-written, lmx vs mlx-lm")
        ma, ta = read_st(os.path.join(a, "model.safetensors"))
        mb, tb = read_st(os.path.join(b, "model.safetensors"))
        same = ma == mb and ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta)
        diff = [k for k in ta if k in tb and ta[k] != tb[k]][:3]
        print(f"  {tag}: {len(ta)} tensors identical to mlx-lm's: {same} {diff or ''}")
        fail += not same
        ha, hb = header_entries(os.path.join(a, "model.safetensors")), header_entries(os.path.join(b, "model.safetensors"))
        if ha != hb:
            print("  header entries differ")
            fail += 1
        ia = json.load(open(os.path.join(a, "model.safetensors.index.json")))
        ib = json.load(open(os.path.join(b, "model.safetensors.index.json")))
        if ia != ib:
            print("  index differs:", ia["metadata"], ib["metadata"])
            fail += 1
        ca = json.load(open(os.path.join(a, "config.json")))
        cb = json.load(open(os.path.join(b, "config.json")))
        if ca != cb:
            print("  config differs:", {k: (ca.get(k), cb.get(k)) for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)})
            fail += 1
    # GGUF -> MLX folder: mlx-lm gives the GGUF's logits (as lmx computes them) and transformers'
    # tokenizer loaded from the written tokenizer.json encodes as llama2.c / the GGUF vocabulary do.
    gguf = os.path.join(src, "models", "stories260K.gguf")
    for flags in ([], ["-q", "--q-bits", "8", "--q-group-size", "32"]):
        a = os.path.join(tmp, "gguf_" + "_".join(flags).replace("-", ""))
        sh(lmx, "convert", "--hf-path", gguf, "--mlx-path", a, *flags)
        ref = logits(gguf, tmp, "lmx") if not flags else logits(a, tmp, "lmx")
        close(logits(a, tmp, "mlx"), ref, "stories260K.gguf -> folder " + " ".join(flags) + ": mlx-lm vs lmx")
    from transformers import AutoTokenizer  # noqa: E402

    tok = AutoTokenizer.from_pretrained(os.path.join(tmp, "gguf_"))
    rec = json.load(open(os.path.join(src, "tests", "data", "stories260K", "ppl_tinystories_sample.json")))
    bad = [k for k, v in rec["prompt_encodings_llama2c_style"].items() if tok.encode(k) != v]
    text = open(os.path.join(src, "tests", "data", "text", "tinystories_sample.txt")).read()
    stories = [x.strip() for x in text.split("<|endoftext|>") if x.strip()]
    lens = [len(tok.encode(x)) for x in stories]
    want = [x["tokens_incl_bos"] for x in rec["per_story"]]
    ok = not bad and lens == want and tok.decode(tok.encode(stories[0]), skip_special_tokens=True) == stories[0]
    print(f"  transformers on the converted tokenizer.json: prompts {'ok' if not bad else bad}, story lengths {lens} "
          f"(llama2.c {want}) {'ok' if ok else 'FAIL'}")
    fail += not ok
print("FAIL" if fail else "PASS", f"({fail} problems)")
sys.exit(1 if fail else 0)
