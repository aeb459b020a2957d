"""Prints the GPU check's performance table: our cuda_* criterion medians next to the
PyTorch baselines of the same call (ratio = baseline / ours, > 1 means we are faster).

usage: summarize.py <out dir with baseline_*.json> <criterion dir>"""
import glob
import json
import os
import sys

out, crit = sys.argv[1], sys.argv[2]
base = {}
for f in glob.glob(os.path.join(out, "baseline_*.json")):
    base.update(json.load(open(f)))

ours = {}
for est in glob.glob(os.path.join(crit, "cuda_*", "**", "new", "estimates.json"), recursive=True):
    rel = os.path.relpath(os.path.dirname(os.path.dirname(est)), crit)
    ours[rel] = json.load(open(est))["median"]["point_estimate"] / 1e6  # ns -> ms

# (our criterion id prefix, baseline key): filled as kernels gain benches.
PAIRS = [
    ("cuda_deform_conv/p3_256ch_stride1", "deform_conv/p3_s1"),
    ("cuda_deform_conv/p3_to_p4_stride2", "deform_conv/p3_to_p4_s2"),
    ("cuda_group_norm/five_levels_b1", "group_norm/all_levels"),
    ("cuda_group_norm/p3_b1", "group_norm/p3"),
    ("cuda_group_norm/p5_p7_b1", "group_norm/p5_p7"),
    ("cuda_bi_attn/n22400_t256_h8", "bi_attn/nv22400_t256"),
    ("cuda_bi_attn/n22400_t8_h8", "bi_attn/nv22400_t8"),
    # Ours is the whole ATSS post-processing (selection, decode, NMS, top-100); the baseline
    # is NMS alone, so the ratio understates ours.
    ("cuda_nms/atss_glip_t_8img", "nms/8x5000x80_per_image"),
]

print("| ours (criterion id) | ms | baseline | ms | baseline/ours |")
print("|---|---|---|---|---|")
for k in sorted(ours):
    b = next((bk for pre, bk in PAIRS if k == pre or k.startswith(pre + "/")), None)
    if b and b in base:
        print(f"| {k} | {ours[k]:.4f} | {b} | {base[b]['ms']:.4f} | {base[b]['ms'] / ours[k]:.2f}x |")
    else:
        print(f"| {k} | {ours[k]:.4f} | - | - | - |")
for bk, v in sorted(base.items()):
    print(f"| (baseline only) | - | {bk} | {v['ms']:.4f} | - |")
