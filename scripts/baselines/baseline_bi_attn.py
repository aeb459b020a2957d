"""Plain PyTorch bi-directional cross-attention written from the spec (§3.5.1), fp16:
the baseline for our bi_attn kernel. 8 heads x 256 dims, 22400 image positions."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
import torch
from common import args, time_ms, write

a = args()
dev, dt = a.device, (torch.float16 if a.device == "cuda" else torch.float32)
H, D, NV = 8, 256, 22400


def bi_attn(q, k, vv, vl, mask):
    # q, vv: [H, NV, D]; k, vl: [H, T, D]; mask: [T] of 0/1
    A = torch.bmm(q, k.transpose(1, 2)).clamp(-50000, 50000)
    At = A.transpose(1, 2)
    At = (At - At.max(-1, keepdim=True)[0]).clamp(-50000, 50000)
    Pt = At.float().softmax(-1).to(dt)
    fill = torch.where(mask > 0, 1.0, -9e15).to(torch.float32)
    Pv = (A.float() + fill).softmax(-1).to(dt)
    return torch.bmm(Pv, vl), torch.bmm(Pt, vv)


res = {}
for T in (256, 8):
    q = torch.randn(H, NV, D, device=dev, dtype=dt) / 16
    k = torch.randn(H, T, D, device=dev, dtype=dt)
    vv = torch.randn(H, NV, D, device=dev, dtype=dt)
    vl = torch.randn(H, T, D, device=dev, dtype=dt)
    mask = torch.ones(T, device=dev)
    if T == 256:
        mask[200:] = 0
    with torch.no_grad():
        res[f"bi_attn/nv{NV}_t{T}"] = {"ms": time_ms(lambda: bi_attn(q, k, vv, vl, mask), dev, a.reps),
                                       "flop": 3 * 2 * H * NV * T * D}
write(a.json, res)
