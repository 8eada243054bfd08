#!/usr/bin/env python3
"""Prompt-cache interop with mlx-lm itself (ctest label "interop").

Model: stories260K's HF copy plus tests/data/stories260K/chat (its vocabulary as
tokenizer.json and a small chat template), a folder both load with a tokenizer.
1. `mlx_lm.cache_prompt` writes a cache; `lmx generate --prompt-cache-file` continues
   from it with exactly mlx_lm.generate's greedy text (the <query> rendering included).
2. The reverse: `lmx cache-prompt` writes one; mlx_lm.generate continues from it with
   the same text, and so does lmx.
3. Both caches hold the same tensors (names, shapes, metadata keys) and the same
   keys/values within 1e-5 of max|x|.
4. A RotatingKVCache file written by lmx (--max-kv-size) continues identically in both.
Installs mlx[cpu] and mlx-lm with pip when missing; exits 77 (SKIP) if it cannot.
Usage: test_prompt_cache.py LMX_BINARY SOURCE_DIR"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

lmx, src = sys.argv[1], sys.argv[2]
from mlx_env import require_mlx  # noqa: E402 (this folder)

require_mlx()
import numpy as np  # noqa: E402

fail = 0


def sh(*a, stdin=None):
    r = subprocess.run(list(a), capture_output=True, text=True, input=stdin)
    if r.returncode:
        raise RuntimeError(" ".join(a) + "\n" + r.stdout + r.stderr)
    return r.stdout


def check(ok, what, detail=""):
    global fail
    print(f"  {what:60s} {'ok' if ok else 'FAIL ' + detail}")
    fail += not ok


def read_st(path):
    d = open(path, "rb").read()
    n = struct.unpack("<Q", d[:8])[0]
    h = json.loads(d[8 : 8 + n])
    meta = h.pop("__metadata__", {})
    dt = {"F32": np.float32, "I32": np.int32, "U32": np.uint32, "F16": np.float16}
    return meta, {k: np.frombuffer(d[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]],
                                   dt[v["dtype"]]).reshape(v["shape"]) for k, v in h.items()}


MLX = [sys.executable, "-m", "mlx_lm"]
with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "stories_chat")
    os.makedirs(model)
    for d in ("hf", "chat"):
        for f in os.listdir(os.path.join(src, "tests", "data", "stories260K", d)):
            shutil.copy(os.path.join(src, "tests", "data", "stories260K", d, f), model)
    a, b = os.path.join(tmp, "mlx.safetensors"), os.path.join(tmp, "lmx.safetensors")
    system = "One day, a little girl named Lily found a needle in her room. She knew it was difficult to play with it."
    query = "Once upon a time"
    sh(*MLX, "cache_prompt", "--model", model, "--prompt", "-", "--prompt-cache-file", a, stdin=system)
    out = sh(lmx, "cache-prompt", "--model", model, "--prompt", "-", "--prompt-cache-file", b, stdin=system)
    check("Saving..." in out and "Processed" in out and "Peak memory:" in out, "lmx cache-prompt output", out)

    def gen(who, cache):
        if who == "mlx":
            t = sh(*MLX, "generate", "--model", model, "--prompt-cache-file", cache, "--prompt", query,
                   "--max-tokens", "40", "--verbose", "False")
        else:
            t = sh(lmx, "generate", "--model", model, "--prompt-cache-file", cache, "--prompt", query,
                   "--max-tokens", "40", "--verbose", "false")
        return t.strip()

    ref = gen("mlx", a)
    check(len(ref) > 10, "mlx_lm.generate from its own cache", repr(ref))
    for who, cache in (("lmx", a), ("mlx", b), ("lmx", b)):
        t = gen(who, cache)
        check(t == ref, f"{who} generate from the {os.path.basename(cache)} cache", f"{t!r} vs {ref!r}")

    ma, ta = read_st(a)
    mb, tb = read_st(b)
    check(set(ma) == set(mb), "metadata keys", f"{sorted(ma)} vs {sorted(mb)}")
    check(ma.get("0.tokenizer_config") == mb.get("0.tokenizer_config"), "tokenizer_config metadata",
          f"{ma.get('0.tokenizer_config')!r} vs {mb.get('0.tokenizer_config')!r}")
    check(set(ta) == set(tb), "tensor names")
    for k in sorted(ta):
        if k not in tb:
            continue
        x, y = ta[k], tb[k]
        if x.ndim == 4:  # mlx-lm stores the whole 256-step buffer; lmx the used rows
            x = x[:, :, : y.shape[2], :]
        ok = x.shape == y.shape and float(np.abs(x.astype(np.float64) - y).max(initial=0)) <= 1e-5 * max(
            float(np.abs(x).max(initial=0)), 1e-30)
        if not ok:
            check(False, f"tensor {k}", f"{x.shape} vs {y.shape}")
    check(True, "tensors agree (1e-5 of max|x|)")
    # a RotatingKVCache file written by lmx (a window smaller than the cached prompt): mlx-lm
    # continues from lmx's ring buffer with lmx's text
    c = os.path.join(tmp, "lmx_rot.safetensors")
    sh(lmx, "cache-prompt", "--model", model, "--prompt", "-", "--prompt-cache-file", c, "--max-kv-size", "16",
       stdin=system)
    meta, _ = read_st(c)
    check(meta.get("1.0") == "RotatingKVCache", "lmx writes RotatingKVCache", str(meta.get("1.0")))
    t_mlx, t_lmx = gen("mlx", c), gen("lmx", c)
    check(t_mlx == t_lmx and len(t_lmx) > 10, "rotating cache: mlx and lmx continue alike", f"{t_mlx!r} vs {t_lmx!r}")
    # another --model than the cache's is refused, as in mlx-lm
    r = subprocess.run([lmx, "generate", "--model", os.path.join(src, "models", "stories260K.gguf"),
                        "--prompt-cache-file", a, "--prompt", "x"], capture_output=True, text=True)
    check(r.returncode != 0 and "different model" in r.stderr, "another --model refused", r.stderr)
print("FAIL" if fail else "OK")
sys.exit(1 if fail else 0)
