#!/usr/bin/env python3
"""Interop with mlx-lm itself (ctest label "interop").

1. mlx-lm loads what `lmx convert -q` writes and gives the same logits as lmx (1e-4 of max|logit|).
2. lmx loads what mlx-lm's convert path writes (tests/interop/mlx_convert.py: mlx_lm.convert minus the
   tokenizer, which the fixtures lack) and gives mlx-lm's logits.
3. Both writers produce the same tensors: names, dtypes, shapes and bytes identical. (The files are not
   byte-identical: mx.save_safetensors lays the data out in its hash-map order, which lmx does not mimic;
   headers otherwise match: sorted keys, {"format": "mlx"}, no padding.)
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
try:
    import mlx.core  # noqa: F401
    import mlx_lm  # noqa: F401
except ImportError:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mlx[cpu]", "mlx-lm"], capture_output=True)
    if r.returncode:
        print("SKIP: pip could not install mlx[cpu] mlx-lm:", r.stderr.decode()[-300:])
        sys.exit(77)
import numpy as np  # noqa: E402

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


def logits(path, tmp, who):
    out = os.path.join(tmp, who + "_" + os.path.basename(path) + ".safetensors")
    if who == "lmx":
        sh(lmx, "logits", "--model", path, "--tokens", TOKS, "--out", out)
    else:
        sh(sys.executable, os.path.join(here, "mlx_logits.py"), path, TOKS, out)
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
        ("llama", [], []),
        ("llama", ["--q-bits", "8", "--q-group-size", "32"], ["--bits", "8", "--group", "32"]),
        ("llama_tied", ["--q-group-size", "32"], ["--group", "32"]),
        ("qwen3", ["--quant-predicate", "mixed_3_6", "--q-group-size", "32"], ["--recipe", "mixed_3_6", "--group", "32"]),
    ]:
        fx = os.path.join(src, "tests", "data", "hf", case)
        tag = case + "_" + "_".join(flags).replace("-", "")
        a = os.path.join(tmp, "lmx_" + tag)
        b = os.path.join(tmp, "mlx_" + tag)
        print(sh(lmx, "convert", "--hf-path", fx, "--mlx-path", a, "-q", *flags).strip().splitlines()[-1])
        sh(sys.executable, os.path.join(here, "mlx_convert.py"), fx, b, *mflags)
        close(logits(a, tmp, "mlx"), logits(a, tmp, "lmx"), f"{tag}: lmx-written, mlx-lm vs lmx")
        close(logits(b, tmp, "lmx"), logits(b, tmp, "mlx"), f"{tag}: mlx-written, lmx vs mlx-lm")
        ma, ta = read_st(os.path.join(a, "model.safetensors"))
        mb, tb = read_st(os.path.join(b, "model.safetensors"))
        same = ma == mb and ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta)
        diff = [k for k in ta if k in tb and ta[k] != tb[k]][:3]
        print(f"  {tag}: {len(ta)} tensors identical to mlx-lm's: {same} {diff or ''}")
        fail += not same
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
print("FAIL" if fail else "PASS", f"({fail} problems)")
sys.exit(1 if fail else 0)
