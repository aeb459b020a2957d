"""torchvision.ops.batched_nms (fp32): baseline for our multi-label NMS.
8 images x 5000 candidates over 80 labels, IoU 0.6 (torchvision has no +1 convention;
the work is the same)."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
import torch
import torchvision
from common import args, time_ms, write

a = args()
dev = a.device
g = torch.Generator(device="cpu").manual_seed(0)
imgs, n, labels = 8, 5000, 80
xy = torch.rand(imgs, n, 2, generator=g) * 1200
wh = torch.rand(imgs, n, 2, generator=g) * 200 + 8
boxes = torch.cat([xy, xy + wh], -1).to(dev)
scores = torch.rand(imgs, n, generator=g).to(dev)
lab = torch.randint(0, labels, (imgs, n), generator=g).to(dev)


def per_image():
    return [torchvision.ops.batched_nms(boxes[i], scores[i], lab[i], 0.6) for i in range(imgs)]


def one_call():
    idx = torch.arange(imgs, device=dev).repeat_interleave(n)
    return torchvision.ops.batched_nms(boxes.reshape(-1, 4), scores.reshape(-1), lab.reshape(-1) + idx * labels, 0.6)


res = {"nms/8x5000x80_per_image": {"ms": time_ms(per_image, dev, a.reps)},
       "nms/8x5000x80_one_call": {"ms": time_ms(one_call, dev, a.reps)}}
write(a.json, res)
