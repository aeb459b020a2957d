#!/usr/bin/env python3
"""Make the small PyTorch checkpoints in tests/testdata/pth/ that tests/pth.rs and
tests/cli_convert.rs read (the Rust tests never run Python; this documents how the files were
made and regenerates them).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch safetensors numpy
    /tmp/venv/bin/python scripts/make-pth-fixtures.py

Tensor values are simple formulas (multiples of 1/4 etc., exact in f16 and bf16) so the Rust
tests recompute them without any reference file:

* plain_state_dict.pth: a bare state_dict (no "model" entry) with f32, f16, bf16, f64, i64,
  i32, u8, bool tensors, a transposed (non-contiguous) view, a sliced view with a storage
  offset, two views of one storage, a 0-d scalar, an empty tensor and an nn.Parameter.
* glip_shaped.pth: a dict shaped like GLIP's training checkpoint (utils/checkpoint.py):
  "model" (OrderedDict, every key prefixed `module.`), "model_ema" (same keys, other values),
  "optimizer" (a real AdamW state_dict after one step), "scheduler" (a dict with a set, a
  None, floats), "iteration" 123, plus "args" (an argparse.Namespace: an arbitrary class) and
  "meta" (numpy scalars and bytes), which a reader must tolerate without understanding.
* unsupported_model.pth: a "model" holding an f8 tensor, which must fail with the key named.
* tiny_glip_model.pth: the golden tiny GLIP-T weights
  (tests/testdata/golden/12_e2e_tiny_weights.safetensors, 313 tensors, f32 + i64) wrapped as
  GLIP writes them: {"model": {"module." + k: v}, "model_ema": the same tensors (shared storages,
  so the file stays ~4 MB), "optimizer": {...}, "iteration": 90000}.
"""

import argparse
import collections
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "testdata", "pth")


def quarter_ramp(n, dtype, start=-2.0):
    """start, start + 0.25, …: exact in f16 / bf16 / f32 for small n."""
    return (torch.arange(n, dtype=torch.float64) * 0.25 + start).to(dtype)


def plain_state_dict():
    sd = collections.OrderedDict()
    sd["f32"] = quarter_ramp(12, torch.float32).reshape(3, 4)
    sd["f16"] = quarter_ramp(5, torch.float16)
    sd["bf16"] = quarter_ramp(6, torch.bfloat16).reshape(2, 3)
    sd["f64"] = quarter_ramp(4, torch.float64)
    sd["i64"] = torch.tensor([-3, 0, 7, 2**40], dtype=torch.int64)
    sd["i32"] = torch.tensor([-5, 6], dtype=torch.int32)
    sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    base = torch.arange(15, dtype=torch.float32).reshape(3, 5)  # base[i, j] = 5 i + j
    sd["transposed"] = base.t()  # [5, 3], stride (1, 5): t[i, j] = 5 j + i
    grid = torch.arange(24, dtype=torch.float32).reshape(4, 6)  # grid[i, j] = 6 i + j
    sd["sliced"] = grid[1:, 2:5]  # [3, 3], offset 8, stride (6, 1): s[i, j] = 6 (i+1) + j + 2
    sd["grid_row0"] = grid[0]  # [6], a second view of grid's storage
    sd["scalar"] = torch.tensor(2.5)  # 0-d
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(quarter_ramp(4, torch.float32, start=1.0))
    assert not sd["transposed"].is_contiguous() and not sd["sliced"].is_contiguous()
    return sd


GLIP_KEYS = [
    # (key, shape, dtype); a few real GLIP-T key names at toy sizes.
    ("backbone.body.patch_embed.proj.weight", (4, 3, 2, 2), torch.float32),
    ("backbone.body.patch_embed.proj.bias", (4,), torch.float32),
    ("backbone.body.layers.0.blocks.0.attn.relative_position_bias_table", (9, 2), torch.float32),
    ("backbone.body.layers.0.blocks.0.attn.relative_position_index", (4, 4), torch.int64),
    ("language_backbone.body.model.embeddings.position_ids", (1, 8), torch.int64),
    ("language_backbone.body.model.embeddings.word_embeddings.weight", (10, 6), torch.float32),
    ("rpn.head.log_scale", (1,), torch.float32),
    ("rpn.head.scales.0.scale", (1,), torch.float32),
    ("rpn.anchor_generator.cell_anchors.0", (1, 4), torch.float32),
]


def glip_value(i, shape, dtype, ema):
    n = int(np.prod(shape))
    if dtype == torch.int64:
        return torch.arange(n, dtype=torch.int64).reshape(shape) + 100 * i
    # model: i + ramp; model_ema: the same minus 1000 (never equal to a model value).
    return (quarter_ramp(n, torch.float64, start=float(i) - (1000.0 if ema else 0.0))).to(dtype).reshape(shape)


def glip_shaped():
    model = collections.OrderedDict()
    ema = collections.OrderedDict()
    for i, (k, shape, dtype) in enumerate(GLIP_KEYS):
        model["module." + k] = glip_value(i, shape, dtype, ema=False)
        ema["module." + k] = glip_value(i, shape, dtype, ema=True)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    scheduler = {
        "milestones": {10, 20},
        "gamma": 0.1,
        "warmup_factor": 1.0 / 3,
        "last_epoch": 123,
        "base_lrs": [0.1],
        "_last_lr": [0.1],
        "warmup_method": "linear",
        "note": None,
    }
    return {
        "model": model,
        "model_ema": ema,
        "optimizer": opt.state_dict(),
        "scheduler": scheduler,
        "iteration": 123,
        "args": argparse.Namespace(config="glip_Swin_T_O365_GoldG.yaml", lr=1e-4, flags=(1, 2)),
        "meta": {
            "np_float": np.float64(0.5),
            "np_array": np.arange(3),
            "blob": b"\x00\x01",
            "big": 2**70,
            # A dtype the reader does not decode: harmless outside the model state_dict.
            "f8": torch.zeros(2, dtype=torch.float8_e4m3fn),
        },
    }


def unsupported_model():
    return {"model": {"module.w": torch.zeros(2, dtype=torch.float8_e4m3fn), "module.b": torch.ones(2)}}


def tiny_glip_model():
    w = load_file(os.path.join(ROOT, "tests", "testdata", "golden", "12_e2e_tiny_weights.safetensors"))
    assert len(w) == 313, len(w)
    model = collections.OrderedDict(("module." + k, v) for k, v in w.items())
    ema = collections.OrderedDict(("module." + k, v) for k, v in w.items())
    return {
        "model": model,
        "model_ema": ema,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0001, "params": list(range(300))}]},
        "iteration": 90000,
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    for name, make in [("plain_state_dict", plain_state_dict), ("glip_shaped", glip_shaped), ("unsupported_model", unsupported_model), ("tiny_glip_model", tiny_glip_model)]:
        path = os.path.join(OUT, name + ".pth")
        torch.save(make(), path)
        print(f"{path}: {os.path.getsize(path)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
