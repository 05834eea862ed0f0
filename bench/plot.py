#!/usr/bin/env python3
"""Turns Google Benchmark JSON from streamattn_bench into a PNG of time and
peak extra memory against sequence length, one line per backend.

    python3 bench/plot.py build/bench/bench.json -o bench/attention.png

Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import re
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = re.compile(r"^(?P<op>[a-z]+)/(?P<backend>[a-z]+)/(?P<shape>[^/]+)/threads:(?P<threads>\d+)")


def sequence_length(shape):
    m = re.search(r"_Nk(\d+)", shape) or re.search(r"_N(\d+)", shape)
    return int(m.group(1)) if m else None


def series_key(op, backend, shape, threads):
    # One line per (operation, backend, everything in the shape but N).
    rest = re.sub(r"_?Nq\d+|_?Nk\d+|_?N\d+", "", shape).strip("_")
    return f"{op} {backend} {rest} t{threads}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="output of --benchmark_out=FILE --benchmark_out_format=json")
    parser.add_argument("-o", "--output", default="bench.png")
    parser.add_argument("--op", default="attention", help="operation prefix to plot (attention, fastformer, ...)")
    args = parser.parse_args()

    with open(args.json) as f:
        data = json.load(f)

    series = defaultdict(list)
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            continue
        m = NAME.match(b["name"])
        if not m or m["op"] != args.op:
            continue
        n = sequence_length(m["shape"])
        if n is None or "_Nq1_" in m["shape"]:
            continue
        seconds = b["real_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        key = series_key(m["op"], m["backend"], m["shape"], m["threads"])
        series[key].append((n, seconds, b.get("peak_extra_bytes", 0.0)))

    if not series:
        raise SystemExit(f"no '{args.op}' benchmarks with a sequence length in {args.json}")

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, points in sorted(series.items()):
        points.sort()
        ns = [p[0] for p in points]
        ax_t.plot(ns, [p[1] for p in points], marker="o", label=key)
        ax_m.plot(ns, [max(p[2], 1.0) for p in points], marker="o", label=key)
    for ax, title, unit in ((ax_t, "time per call", "seconds"), (ax_m, "peak extra heap memory", "bytes")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=7)
    fig.suptitle(f"streamattn {args.op}: {data['context'].get('host_name', '')}")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
