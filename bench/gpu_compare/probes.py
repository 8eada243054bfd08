#!/usr/bin/env python3
"""probes.py OUT.json - the two ceilings of the card, measured in the same run
as the side-by-side (bench/compare_llamacpp_cuda.sh), through PyTorch:

  gemm_bf16_tflops   cuBLAS bf16 GEMM (torch.matmul), 8192x8192x8192 on random
                     N(0,1) data (zeros run faster: METHOD.md), plus the 8B
                     prefill shapes at M=512 for reference
  read_gbs           read-only bandwidth: a sum over a 4 GiB bf16 tensor (80x the
                     L2), bytes read / time; decode is stated against this one
  copy_gbs           a 4 GiB device-to-device copy, bytes read + written / time

Each figure: median of 20 timed calls (CUDA events) after 5 warm-ups; min and
max are kept so the spread is visible.
"""
import json, statistics, subprocess, sys

import torch


def timed(fn, reps=20, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return ts


def stats(vals):
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def main():
    out = {}
    dev = torch.device("cuda")
    p = torch.cuda.get_device_properties(0)
    out["card"] = p.name
    out["sms"] = p.multi_processor_count
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    try:
        out["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem",
             "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError as e:
        out["nvidia_smi"] = str(e)
    g = torch.Generator(device=dev).manual_seed(0)
    gemms = {}
    for (m, n, k) in [(8192, 8192, 8192), (512, 14336, 4096), (512, 4096, 14336), (512, 4096, 4096)]:
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16, generator=g)
        b = torch.randn(k, n, device=dev, dtype=torch.bfloat16, generator=g)
        ts = timed(lambda: torch.matmul(a, b))
        gemms[f"{m}x{n}x{k}"] = stats([2 * m * n * k / t / 1e12 for t in ts])
        del a, b
    out["gemm_bf16_tflops"] = gemms
    n = 2 << 30  # 2 Gi elements of bf16 = 4 GiB
    x = torch.randn(n, device=dev, dtype=torch.bfloat16, generator=g)
    ts = timed(lambda: x.sum(dtype=torch.float32))
    out["read_gbs"] = stats([2 * n / t / 1e9 for t in ts])
    y = torch.empty_like(x)
    ts = timed(lambda: y.copy_(x))
    out["copy_gbs"] = stats([4 * n / t / 1e9 for t in ts])
    json.dump(out, open(sys.argv[1], "w"), indent=1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
