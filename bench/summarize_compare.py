#!/usr/bin/env python3
"""summarize_compare.py - medians, spread and ratios from compare_llamacpp.sh.

usage: python3 bench/summarize_compare.py OUT_DIR [--bytes NAME=BYTES ...]

Prints a markdown table: per model, llama.cpp and lmx prompt (pp) and
generation (tg) tokens/s as median [min-max] over the trials, the lmx/llama.cpp
ratio of medians, and decode bandwidth (model file bytes x tg tokens/s) as a
fraction of the probe's median 2-thread read bandwidth. A ratio whose ranges
overlap is marked "~" (inside the spread: not a win or a loss). Per-round
files of INTERLEAVE=1 runs (NAME.lmx.N.json, NAME.llamacpp.N.json) are
merged into one list of trials per tool."""
import glob, json, os, statistics, sys

def rng(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"

def merge_rounds(d):
    """NAME.lmx.N.json / NAME.llamacpp.N.json -> NAME.lmx.json / NAME.llamacpp.json."""
    names = {os.path.basename(f).split(".lmx.")[0] for f in glob.glob(os.path.join(d, "*.lmx.*.json"))}
    for name in names:
        lm, cpp = None, []
        for f in sorted(glob.glob(os.path.join(d, name + ".lmx.*.json"))):
            try:
                j = json.load(open(f))
            except Exception:
                continue
            if lm is None:
                lm = j
            else:
                lm["trials"] += j["trials"]
        for f in sorted(glob.glob(os.path.join(d, name + ".llamacpp.*.json"))):
            try:
                cpp += json.load(open(f))
            except Exception:
                continue
        merged = {}
        for e in cpp:  # one entry per (test, round): join their samples
            k = (e["n_prompt"], e["n_gen"])
            if k in merged:
                merged[k]["samples_ts"] += e["samples_ts"]
            else:
                merged[k] = e
        if lm is not None:
            json.dump(lm, open(os.path.join(d, name + ".lmx.json"), "w"))
        json.dump(list(merged.values()), open(os.path.join(d, name + ".llamacpp.json"), "w"))

def main():
    d = sys.argv[1]
    merge_rounds(d)
    bw = []
    for f in ("bandwidth_before.json", "bandwidth_after.json"):
        p = os.path.join(d, f)
        if os.path.exists(p):
            r = json.load(open(p))["results"]
            bw += [x["median_gbs"] for x in r if x["threads"] == 2]
    bwm = statistics.median(bw) if bw else None
    print(f"read bandwidth (2 threads, median of probe medians): {bwm} GB/s from {bw}\n")
    print("| model | llama.cpp pp | lmx pp | pp ratio | llama.cpp tg | lmx tg | tg ratio | lmx tg GB/s (frac of probe) |")
    print("|---|---|---|---|---|---|---|---|")
    for lj in sorted(glob.glob(os.path.join(d, "*.lmx.json"))):
        name = os.path.basename(lj)[: -len(".lmx.json")]
        try:
            lm = json.load(open(lj))
        except Exception:
            print(f"| {name} | (lmx run failed, see {name}.lmx.err) |")
            continue
        lpp = [t["prompt_tps"] for t in lm["trials"]]
        ltg = [t["generation_tps"] for t in lm["trials"]]
        cpp_pp = cpp_tg = None
        try:
            for e in json.load(open(os.path.join(d, name + ".llamacpp.json"))):
                if e["n_prompt"] > 0 and e["n_gen"] == 0:
                    cpp_pp = e["samples_ts"]
                elif e["n_gen"] > 0 and e["n_prompt"] == 0:
                    cpp_tg = e["samples_ts"]
        except Exception:
            pass
        def ratio(a, b):
            if not a or not b:
                return "-"
            r = statistics.median(a) / statistics.median(b)
            overlap = min(a) <= max(b) and min(b) <= max(a)
            return f"{r:.2f}x" + (" ~" if overlap else "")
        size = lm.get("model_bytes") or 0
        frac = "-"
        if size and bwm:
            gbs = size * statistics.median(ltg) / 1e9
            frac = f"{gbs:.1f} ({gbs / bwm:.0%})"
        print(f"| {name} | {rng(cpp_pp) if cpp_pp else '-'} | {rng(lpp)} | {ratio(lpp, cpp_pp)} | "
              f"{rng(cpp_tg) if cpp_tg else '-'} | {rng(ltg)} | {ratio(ltg, cpp_tg)} | {frac} |")

if __name__ == "__main__":
    main()
