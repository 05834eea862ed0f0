#!/usr/bin/env python3
"""Runs streamattn_bench_cuda and, when PyTorch with CUDA is importable, times
torch.nn.functional.scaled_dot_product_attention on the same shapes in the
same run, then prints both and the ratio (streamattn / SDPA, higher is better).

    python3 bench/cuda/compare_sdpa.py build/bench/bench/cuda/streamattn_bench_cuda [benchmark flags]

(--benchmark_out=PATH among the flags keeps the benchmark's JSON there.)

Shapes are read back from the benchmark names
(attention/cuda/<type>/B.._Nq.._Nk.._Hq..[_Hk..]_D..[_causal][_16bit_weights]; the last with the
softmax weights rounded to the inputs' type, as SDPA's kernels do, the like-for-like comparison),
so the two sides always measure the same thing. Both sides use [B, H, N, D]
tensors. The benchmark counts 4 * visible (query, key) pairs * D flops per
head; PyTorch's is_causal aligns top-left, which equals our bottom-right
alignment for Nq == Nk; the decode case (Nq = 1) is run non-causal on the
SDPA side, which is the same mask for a single query. The paged, int8 and
unpacked decodes and the prefills pinned to the mma.sync kernel (names ending
in _paged16, _int8, _unpacked and _mma) have no SDPA counterpart and are
listed by the benchmark alone.
"""
import json
import re
import subprocess
import sys
import tempfile

NAME = re.compile(r"attention/cuda/(?P<type>\w+)/B(?P<B>\d+)_Nq(?P<Nq>\d+)_Nk(?P<Nk>\d+)_Hq(?P<Hq>\d+)"
                  r"(?:_Hk(?P<Hk>\d+))?_D(?P<D>\d+)(?P<causal>_causal)?(?:_16bit_weights)?")


def run_streamattn(binary, extra):
    # A --benchmark_out=PATH of the caller's keeps the JSON there; else a temporary file holds it.
    kept = [a.split("=", 1)[1] for a in extra if a.startswith("--benchmark_out=")]
    extra = [a for a in extra if not a.startswith(("--benchmark_out=", "--benchmark_out_format="))]
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        path = kept[-1] if kept else tmp.name
        proc = subprocess.run([binary, f"--benchmark_out={path}", "--benchmark_out_format=json", *extra],
                              stdout=subprocess.PIPE, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.exit(proc.returncode)
        if "no CUDA device" in proc.stdout:
            return []
        with open(path) as f:
            return json.load(f).get("benchmarks", [])


def time_sdpa(torch, case, repeats=20):
    dtype = {"half": torch.float16, "bfloat16": torch.bfloat16}[case["type"]]
    B, Nq, Nk, Hq, D = (int(case[k]) for k in ("B", "Nq", "Nk", "Hq", "D"))
    Hk = int(case["Hk"] or Hq)
    q = torch.rand(B, Hq, Nq, D, device="cuda", dtype=dtype) * 2 - 1
    k = torch.rand(B, Hk, Nk, D, device="cuda", dtype=dtype) * 2 - 1
    v = torch.rand(B, Hk, Nk, D, device="cuda", dtype=dtype) * 2 - 1
    if Hk != Hq:  # older SDPA has no enable_gqa: expand the shared heads
        k = k.repeat_interleave(Hq // Hk, dim=1)
        v = v.repeat_interleave(Hq // Hk, dim=1)
    causal = bool(case["causal"]) and Nq == Nk
    f = torch.nn.functional.scaled_dot_product_attention
    for _ in range(3):
        f(q, k, v, is_causal=causal)
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        f(q, k, v, is_causal=causal)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    results = run_streamattn(sys.argv[1], sys.argv[2:])
    if not results:
        return 0
    try:
        import torch
        if not torch.cuda.is_available():
            raise ImportError("torch without CUDA")
    except ImportError as e:
        print(f"\nPyTorch comparison skipped: {e}")
        return 0
    print(f"\nPyTorch {torch.__version__} SDPA on {torch.cuda.get_device_name()}")
    print(f"{'case':58} {'streamattn':>12} {'SDPA':>12} {'ratio':>7}")
    for r in results:
        m = NAME.fullmatch(r["name"].split("/manual_time")[0])
        if not m or "GFLOP/s" not in r:
            continue
        ours = r["GFLOP/s"]
        seconds = time_sdpa(torch, m.groupdict())
        # The same flop count as the benchmark: its GFLOP/s times its time.
        flops = ours * 1e9 * r["real_time"] * {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[r["time_unit"]]
        theirs = flops / seconds / 1e9
        print(f"{m.group(0):58} {ours:10.1f} GF {theirs:10.1f} GF {ours / theirs:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
