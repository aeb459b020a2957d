"""Shared timing helpers for the PyTorch baselines (run on the GPU machine by gpu-check.sh)."""
import argparse
import json

import torch


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--json", required=True, help="where to write {name: {ms, ...}}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--reps", type=int, default=50)
    return p.parse_args()


def time_ms(fn, device, reps=50, warmup=10):
    """Median milliseconds of fn() over reps runs, timed with CUDA events (host clock on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    else:
        import time
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def write(path, results):
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    for k, v in results.items():
        print(f"{k}: {v['ms']:.4f} ms")
