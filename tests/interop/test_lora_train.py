#!/usr/bin/env python3
"""Training interop with mlx-lm itself (ctest label "interop"): `lmx lora` and
`mlx_lm lora` with the same flags from the same initial adapter take the same
steps.

Model: stories260K's HF copy + tests/data/stories260K/chat (a llama folder both
load with a tokenizer and chat template); data: tests/data/train/shakespeare.
The initial adapter is made with mlx-lm's own code (the init `mlx_lm lora`
itself uses: mx.random.seed(0), model.freeze(), linear_to_lora_layers(model,
-1, rank 8, scale 20, dropout 0)), saved as its trainable parameters + an
adapter_config.json, and both trainers start from it with
--resume-adapter-file. Batches come from numpy's seeded permutations, which
lmx reproduces (MT19937), so the runs see the same batches.

(1) lr 2e-3, batch 8, --mask-prompt, 4 iterations, a report every step: the
    same "Trainable parameters" line; train losses at steps 1-4 and val losses
    at iters 1 and 4 within 2e-3 absolute. Both print 3 decimals, so equal
    values may print 1e-3 apart; the rest is float-order noise (observed: the
    printed values are identical, 6.686/5.545/10.475/6.197). Only 4 steps:
    mlx.optimizers.Adam has no bias correction, so at this rate the first
    updates are ~3x lr and the run is chaotic - identical printed losses for
    7 steps, then float-order differences grow into different trajectories
    (e.g. 7.523 vs 6.744 at step 8).
(2) lr 1e-4, 10 iterations (a stable run): the 10 train losses within 2e-3
    (the printing limit again; observed identical), and the final adapters'
    tensors within 3e-4 of each tensor's max |x| (a check far tighter than
    the printed losses: the lora_b tensors moved ~5e-3 from zero and differ by
    <= 1.7e-7, 3.2e-5 of max |x|, float-order noise that Adam's division by
    sqrt(v) enlarges where v is small; a real difference, e.g. one update
    taken with another sign, would be ~6e-4 absolute, ~0.1 of max |x|).
(3) --test on the same adapter (run 2's mlx-lm adapter, then lmx's): `lmx lora
    --test` and `mlx_lm lora --test` print the same test loss within 2e-3.
Installs mlx[cpu] and mlx-lm with pip when missing; exits 77 (SKIP) if it cannot.
Usage: test_lora_train.py LMX_BINARY SOURCE_DIR"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

lmx, src = sys.argv[1], sys.argv[2]
from mlx_env import require_mlx  # noqa: E402 (this folder)

require_mlx()
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: E402
from mlx_lm.utils import load  # noqa: E402

fail = 0
DATA = os.path.join(src, "tests", "data", "train", "shakespeare")
LORA = {"rank": 8, "scale": 20.0, "dropout": 0.0}
LOSS_TOL = 2e-3  # two 3-decimal prints of equal values differ by <= 1e-3; float-order noise is far below
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def sh(*a):
    r = subprocess.run(list(a), capture_output=True, text=True)
    out = ANSI.sub("", r.stdout + r.stderr)
    if r.returncode:
        raise RuntimeError(" ".join(a) + "\n" + out[-3000:])
    return out


def check(ok, what, detail=""):
    global fail
    print(f"  {what:70s} {'ok' if ok else 'FAIL ' + detail}")
    fail += not ok


def losses(out, who):
    """{'train': {iter: loss}, 'val': {iter: loss}, 'params': line} from either trainer's output."""
    train, val = {}, {}
    for line in out.splitlines():
        if who == "lmx":
            m = re.match(r"Iter (\d+): Train loss ([0-9.]+),", line)
            if m:
                train[int(m[1])] = float(m[2])
            m = re.match(r"Iter (\d+): Val loss ([0-9.]+),", line)
            if m:
                val[int(m[1])] = float(m[2])
        else:  # mlx-lm 0.32's rich table: "  iter   train_loss ..." rows, "   4    val 6.094    0.78s"
            m = re.match(r"\s*(\d+)\s+val\s+([0-9.]+)\s", line)
            if m:
                val[int(m[1])] = float(m[2])
            m = re.match(r"\s*(\d+)\s+([0-9.]+)\s+[▲▼]", line)
            if m:
                train[int(m[1])] = float(m[2])
    params = next((ln.strip() for ln in out.splitlines() if ln.strip().startswith("Trainable parameters:")), None)
    return {"train": train, "val": val, "params": params}


def compare(a, b, what):
    check(set(a) == set(b) and len(a) > 0, f"{what}: same iterations reported", f"lmx {sorted(a)} mlx {sorted(b)}")
    worst = max((abs(a[k] - b[k]) for k in set(a) & set(b)), default=float("inf"))
    check(worst <= LOSS_TOL, f"{what}: within {LOSS_TOL} (worst {worst:.4f})",
          f"lmx {[a[k] for k in sorted(a)]} mlx {[b[k] for k in sorted(b)]}")


def train_both(tag, init, lr, iters, tmp, model):
    flags = ["--model", model, "--train", "--data", DATA, "--batch-size", "8", "--learning-rate", lr, "--num-layers",
             "-1", "--mask-prompt", "--iters", str(iters), "--steps-per-report", "1",
             "--resume-adapter-file", os.path.join(init, "adapters.safetensors")]
    out_l = sh(lmx, "lora", *flags, "--adapter-path", os.path.join(tmp, tag + "_lmx"))
    out_m = sh(sys.executable, "-m", "mlx_lm", "lora", *flags, "--adapter-path", os.path.join(tmp, tag + "_mlx"))
    rl, rm = losses(out_l, "lmx"), losses(out_m, "mlx")
    print(f"  lr {lr}: lmx train {[rl['train'][k] for k in sorted(rl['train'])]} val {rl['val']}")
    print(f"  lr {lr}: mlx train {[rm['train'][k] for k in sorted(rm['train'])]} val {rm['val']}")
    check(rl["params"] is not None and rl["params"] == rm["params"], f"lr {lr}: same trainable-parameters line",
          f"{rl['params']!r} vs {rm['params']!r}")
    compare(rl["train"], rm["train"], f"lr {lr}: {iters} train losses")
    compare(rl["val"], rm["val"], f"lr {lr}: val losses")
    return os.path.join(tmp, tag + "_lmx"), os.path.join(tmp, tag + "_mlx")


def test_loss(who, model, adapter):
    args = ["lora", "--model", model, "--data", DATA, "--test", "--batch-size", "8", "--mask-prompt",
            "--adapter-path", adapter]
    out = sh(lmx, *args) if who == "lmx" else sh(sys.executable, "-m", "mlx_lm", *args)
    m = re.search(r"^Test loss ([0-9.]+), Test ppl ([0-9.]+)\.$", out, re.M)
    return float(m[1]) if m else None


with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "stories_chat")
    os.makedirs(model)
    for d in ("hf", "chat"):
        for f in os.listdir(os.path.join(src, "tests", "data", "stories260K", d)):
            shutil.copy(os.path.join(src, "tests", "data", "stories260K", d, f), model)

    # the initial adapter, made by mlx-lm's code (non-zero lora_a, zero lora_b)
    init = os.path.join(tmp, "init")
    os.makedirs(init)
    net, _ = load(model)
    mx.random.seed(0)
    net.freeze()
    linear_to_lora_layers(net, -1, LORA)
    weights = dict(tree_flatten(net.trainable_parameters()))
    mx.save_safetensors(os.path.join(init, "adapters.safetensors"), weights)
    with open(os.path.join(init, "adapter_config.json"), "w") as f:
        json.dump({"fine_tune_type": "lora", "num_layers": -1, "lora_parameters": LORA}, f, indent=4)
    print(f"initial adapter: {len(weights)} tensors, {sum(v.size for v in weights.values())} parameters")

    train_both("fast", init, "2e-3", 4, tmp, model)
    slow_lmx, slow_mlx = train_both("slow", init, "1e-4", 10, tmp, model)

    a = mx.load(os.path.join(slow_lmx, "adapters.safetensors"))
    b = mx.load(os.path.join(slow_mlx, "adapters.safetensors"))
    check(set(a) == set(b), "lr 1e-4: the same adapter tensors", f"{sorted(set(a) ^ set(b))[:5]}")
    worst, where = 0.0, ""
    for k in sorted(set(a) & set(b)):
        x, y = np.array(a[k], dtype=np.float64), np.array(b[k], dtype=np.float64)
        if x.shape != y.shape:
            check(False, f"lr 1e-4: {k} shape", f"{x.shape} vs {y.shape}")
            continue
        rel = float(np.abs(x - y).max()) / max(float(np.abs(y).max()), 1e-30)
        if rel > worst:
            worst, where = rel, k
    check(worst <= 3e-4, f"lr 1e-4: adapters after 10 steps within 3e-4 of max|x| (worst {worst:.2e})", where)
    print(f"  (worst tensor: {where})")
    moved = max(float(np.abs(np.array(b[k])).max()) for k in b if k.endswith("lora_b"))
    check(moved > 0, f"lr 1e-4: lora_b moved from zero (max |b| {moved:.3g})")

    for tag, adapter in (("mlx-lm's", slow_mlx), ("lmx's", slow_lmx)):
        tl, tm = test_loss("lmx", model, adapter), test_loss("mlx", model, adapter)
        ok = tl is not None and tm is not None and abs(tl - tm) <= LOSS_TOL
        check(ok, f"--test on {tag} adapter: lmx {tl} vs mlx-lm {tm}")

print("FAILED" if fail else "all ok")
sys.exit(1 if fail else 0)
