#!/usr/bin/env python3
"""summarize_cuda.py RES (a folder or the res.tar.gz of bench/compare_llamacpp_cuda.sh)

Prints markdown: the card and probes, then per model llama.cpp and lmx pp512 /
tg128 tok/s as median [min-max] of the trials, the lmx/llama.cpp ratio of the
medians ("~" when the ranges overlap: inside the spread), decode as GB/s
(model file bytes x tg tok/s, the bytes one decode step reads at least) and as
a fraction of the measured read bandwidth, and the 8B bf16 prefill rate as
TFLOP/s against the measured 8192^3 bf16 GEMM rate.
Prefill FLOPs per token are 2 x the parameters of the layers' matrices (the
token embedding lookup and the lm_head, computed for the last token only, are
left out; attention scores add 2 x 2 x L x (T/2) x H x hd per token on average,
counted too)."""
import glob, io, json, os, statistics, sys, tarfile, tempfile

SHAPES = {"llama-1b": dict(D=2048, L=16, H=32, K=8, hd=64, F=8192),
          "llama-8b": dict(D=4096, L=32, H=32, K=8, hd=128, F=14336)}


def prefill_flops_per_token(s, T=512):
    D, L, H, K, hd, F = s["D"], s["L"], s["H"], s["K"], s["hd"], s["F"]
    layer = D * H * hd + 2 * D * K * hd + H * hd * D + 3 * D * F
    attn = 2 * 2 * (T / 2) * H * hd  # QK^T and PV, causal: on average T/2 keys
    return L * (2 * layer + attn)


def rng(xs):
    return f"{statistics.median(xs):,.1f} [{min(xs):,.1f}–{max(xs):,.1f}]"


def ratio(a, b):
    if not a or not b:
        return "-"
    r = statistics.median(a) / statistics.median(b)
    overlap = min(a) <= max(b) and min(b) <= max(a)
    return f"**{r:.2f}×**" + (" ~" if overlap else "")


def load(d, name):
    cpp_pp = cpp_tg = lpp = ltg = None
    size = None
    try:
        for e in json.load(open(os.path.join(d, name + ".llamacpp.json"))):
            if e["n_prompt"] > 0 and e["n_gen"] == 0:
                cpp_pp = e["samples_ts"]
            elif e["n_gen"] > 0 and e["n_prompt"] == 0:
                cpp_tg = e["samples_ts"]
            size = e.get("model_size", size)
    except Exception:
        pass
    try:
        lm = json.load(open(os.path.join(d, name + ".lmx.json")))
        lpp = [t["prompt_tps"] for t in lm["trials"]]
        ltg = [t["generation_tps"] for t in lm["trials"]]
        size = lm.get("model_bytes") or size
        peak = max(t["peak_memory"] for t in lm["trials"])
    except Exception:
        peak = None
    return cpp_pp, cpp_tg, lpp, ltg, size, peak


def main():
    src = sys.argv[1]
    if src.endswith(".tar.gz"):
        tmp = tempfile.mkdtemp()
        tarfile.open(src).extractall(tmp)
        src = os.path.join(tmp, "res")
    d = src
    for f in sorted(glob.glob(os.path.join(d, "info.*.txt")))[:1]:
        print("```\n" + open(f).read().strip() + "\n```")
    probes = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, "probes.*.json")))]
    gemm = [p["gemm_bf16_tflops"]["8192x8192x8192"]["median"] for p in probes]
    rd = [p["read_gbs"]["median"] for p in probes]
    cp = [p["copy_gbs"]["median"] for p in probes]
    if probes:
        print(f"\nProbes ({len(probes)} runs, medians of 20 each): bf16 GEMM 8192³ {', '.join(f'{g:.0f}' for g in gemm)} "
              f"TFLOP/s; read (sum over 4 GiB bf16) {', '.join(f'{r:.0f}' for r in rd)} GB/s; "
              f"copy (read+write) {', '.join(f'{c:.0f}' for c in cp)} GB/s")
        for k, v in probes[-1]["gemm_bf16_tflops"].items():
            print(f"  GEMM {k}: {v['median']:.0f} [{v['min']:.0f}–{v['max']:.0f}] TFLOP/s")
    gm = statistics.median(gemm) if gemm else None
    rb = statistics.median(rd) if rd else None
    for shape in SHAPES:
        rows = [("F16 GGUF", f"{shape}-f16", f"{shape}-f16"),
                ("bf16 HF folder (lmx) vs F16 GGUF (llama.cpp)", f"{shape}-bf16", f"{shape}-f16"),
                ("bf16 HF, LMX_CUDA_FAST_GEMM=1 vs F16 GGUF", f"{shape}-bf16-fastgemm", f"{shape}-f16"),
                ("bf16 HF, LMX_CUDA_EXACT=1 vs F16 GGUF", f"{shape}-bf16-exact", f"{shape}-f16"),
                ("Q4_0 GGUF", f"{shape}-q4_0", f"{shape}-q4_0"),
                ("MLX 4-bit g64 (lmx) vs Q4_0 GGUF (llama.cpp)", f"{shape}-mlx4", f"{shape}-q4_0")]
        if not any(os.path.exists(os.path.join(d, f"{l}.lmx.json")) or
                   os.path.exists(os.path.join(d, f"{c}.llamacpp.json")) for _, l, c in rows):
            continue
        print(f"\n**{shape}** (tok/s, median [min–max] of 3; decode GB/s = file bytes × tg tok/s; % of read probe "
              f"{rb:.0f} GB/s)\n" if rb else f"\n**{shape}**\n")
        print("| model | llama.cpp pp512 | lmx pp512 | pp ratio | llama.cpp tg128 | lmx tg128 | tg ratio "
              "| llama.cpp decode GB/s | lmx decode GB/s | lmx peak GB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, lname, cname in rows:
            _, _, lpp, ltg, lsize, peak = load(d, lname)
            cpp_pp, cpp_tg, _, _, csize, _ = load(d, cname)
            if label != rows[0][0] and not lpp and not ltg:
                continue  # an lmx variant this run did not measure
            def gbs(tg, size):
                if not tg or not size:
                    return "-"
                g = size * statistics.median(tg) / 1e9
                return f"{g:,.0f} ({g / rb:.0%})" if rb else f"{g:,.0f}"
            print(f"| {label} | {rng(cpp_pp) if cpp_pp else '-'} | {rng(lpp) if lpp else '-'} | {ratio(lpp, cpp_pp)} | "
                  f"{rng(cpp_tg) if cpp_tg else '-'} | {rng(ltg) if ltg else '-'} | {ratio(ltg, cpp_tg)} | "
                  f"{gbs(cpp_tg, csize)} | {gbs(ltg, lsize)} | {peak if peak is not None else '-'} |")
        if gm:
            fl = prefill_flops_per_token(SHAPES[shape])
            print(f"\nPrefill as a fraction of the measured GEMM rate ({gm:.0f} TFLOP/s; {fl / 1e9:.2f} GFLOP/token):")
            for label, name, who in [("lmx bf16 (default)", f"{shape}-bf16", "lmx"),
                                     ("lmx bf16 LMX_CUDA_EXACT=1", f"{shape}-bf16-exact", "lmx"),
                                     ("lmx bf16 LMX_CUDA_FAST_GEMM=1", f"{shape}-bf16-fastgemm", "lmx"),
                                     ("lmx F16 GGUF", f"{shape}-f16", "lmx"),
                                     ("llama.cpp F16 GGUF", f"{shape}-f16", "cpp")]:
                cpp_pp, _, lpp, _, _, _ = load(d, name)
                xs = lpp if who == "lmx" else cpp_pp
                if xs:
                    t = fl * statistics.median(xs) / 1e12
                    print(f"- {label}: {statistics.median(xs):,.0f} tok/s = {t:.0f} TFLOP/s = {t / gm:.0%}")


if __name__ == "__main__":
    main()
