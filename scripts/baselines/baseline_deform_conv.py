"""torchvision.ops.deform_conv2d in fp16: the baseline for our deform_conv kernel (GLIP-T P3)."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
import torch
import torchvision
from common import args, time_ms, write

a = args()
dev, dt = a.device, (torch.float16 if a.device == "cuda" else torch.float32)
res = {}
for name, (h, w, stride) in {"p3_s1": (100, 168, 1), "p3_to_p4_s2": (100, 168, 2)}.items():
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = torch.randn(1, 256, h, w, device=dev, dtype=dt)
    wt = torch.randn(256, 256, 3, 3, device=dev, dtype=dt) * 0.02
    b = torch.randn(256, device=dev, dtype=dt)
    off = torch.randn(1, 18, oh, ow, device=dev, dtype=dt)
    m = torch.rand(1, 9, oh, ow, device=dev, dtype=dt)
    f = lambda: torchvision.ops.deform_conv2d(x, off, wt, b, stride=stride, padding=1, mask=m)
    res[f"deform_conv/{name}"] = {"ms": time_ms(f, dev, a.reps), "flop": 2 * 256 * 256 * 9 * oh * ow}
write(a.json, res)
