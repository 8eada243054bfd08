#!/usr/bin/env python3
"""g7b_ncu.py OLD.csv NEW.csv [bench.log] - per-kernel table of one decode step
from `ncu --metrics gpu__time_duration.sum --csv --print-units base` over
`lmx generate ... -m 2` (helper G7B, bench/g7b_step_gpu.sh).

The step is the kernels from the last embedding lookup (get_rows*) to the end
(the greedy pick included). Prints per kernel name: launches and summed
microseconds, old vs new, the sums, and, from bench.log, the step's wall time
(1 / generation tok/s of `lmx bench`) minus the kernel sum = graph gaps."""
import csv, json, re, sys


def step_kernels(path):
    rows, header = [], None
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return []
    for ln in lines:
        if not ln.startswith('"'):
            continue
        rec = next(csv.reader([ln]))
        if header is None:
            if rec and rec[0] == "ID":
                header = rec
            continue
        d = dict(zip(header, rec))
        if d.get("Metric Name") != "gpu__time_duration.sum":
            continue
        try:
            ns = float(d["Metric Value"].replace(",", ""))
        except ValueError:
            continue
        name = d["Kernel Name"]
        name = re.sub(r"^void ", "", name).split("(")[0].replace(" ", "")
        rows.append((name, ns / 1e3))
    last = max((i for i, r in enumerate(rows) if "get_rows" in r[0]), default=0)
    return rows[last:]


def agg(ks):
    out = {}
    for n, us in ks:
        c, t = out.get(n, (0, 0.0))
        out[n] = (c + 1, t + us)
    return out


def walls(path):
    w, lab = {}, None
    if not path:
        return w
    for ln in open(path, errors="replace"):
        m = re.match(r"===== (.*)", ln)
        if m:
            lab = m.group(1).strip()
        m = re.search(r'"averages": \{"prompt_tps": [0-9.]+, "generation_tps": ([0-9.]+)', ln)
        if m and lab and lab not in w and float(m.group(1)) > 0:
            w[lab] = 1e3 / float(m.group(1))
    return w


old, new = step_kernels(sys.argv[1]), step_kernels(sys.argv[2])
w = walls(sys.argv[3] if len(sys.argv) > 3 else None)
ao, an = agg(old), agg(new)
names = sorted(set(ao) | set(an), key=lambda n: -max(ao.get(n, (0, 0))[1], an.get(n, (0, 0))[1]))
print("%-52s %6s %10s | %6s %10s" % ("kernel (one decode step)", "n old", "us old", "n new", "us new"))
for n in names:
    co, to = ao.get(n, (0, 0.0))
    cn, tn = an.get(n, (0, 0.0))
    print("%-52s %6d %10.1f | %6d %10.1f" % (n[:52], co, to, cn, tn))
so, sn = sum(t for _, t in old), sum(t for _, t in new)
print("%-52s %6d %10.1f | %6d %10.1f" % ("SUM", len(old), so, len(new), sn))
for lab, ms in w.items():
    print("bench %-40s step wall %.3f ms/token" % (lab, ms))
if "old" in w and so:
    print("old: wall %.1f us - kernels %.1f us = %.1f us outside kernels" % (w["old"] * 1e3, so, w["old"] * 1e3 - so))
if "new" in w and sn:
    print("new: wall %.1f us - kernels %.1f us = %.1f us outside kernels" % (w["new"] * 1e3, sn, w["new"] * 1e3 - sn))
