"""nn.GroupNorm(16, 256) in fp16 at the five GLIP-T pyramid sizes: baseline for group_norm."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
import torch
from common import args, time_ms, write

a = args()
dev, dt = a.device, (torch.float16 if a.device == "cuda" else torch.float32)
gn = torch.nn.GroupNorm(16, 256).to(dev, dt)
levels = {"p3": (100, 168), "p4": (50, 84), "p5": (25, 42), "p6": (13, 21), "p7": (7, 11)}
res = {}
xs = {k: torch.randn(1, 256, h, w, device=dev, dtype=dt) for k, (h, w) in levels.items()}
with torch.no_grad():
    for k, x in xs.items():
        res[f"group_norm/{k}"] = {"ms": time_ms(lambda: gn(x), dev, a.reps), "bytes": 2 * x.numel() * 2}
    small = [xs["p5"], xs["p6"], xs["p7"]]
    res["group_norm/p5_p7"] = {"ms": time_ms(lambda: [gn(x) for x in small], dev, a.reps),
                               "bytes": sum(2 * x.numel() * 2 for x in small)}
    res["group_norm/all_levels"] = {"ms": time_ms(lambda: [gn(x) for x in xs.values()], dev, a.reps),
                                    "bytes": sum(2 * x.numel() * 2 for x in xs.values())}
write(a.json, res)
