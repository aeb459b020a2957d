#!/usr/bin/env python3
"""Speed anchor: the ORIGINAL microsoft/GLIP GLIP-T forward pass (PyTorch), on the CPU
or a GPU (--device cuda).

This script times GLIP's own Python code (maskrcnn_benchmark, microsoft/GLIP
commit 9dda955) on the CPU, so that glip-rt's CPU backend can be compared to it,
and on a GPU (scripts/gpu-check.sh runs it on the lent card, from the GLIP
sources and wheels `gpu-check.sh build` packs), against glip-rt's CUDA backend.
No GLIP code is copied into this project: the script imports a GLIP checkout
that lives OUTSIDE the project (``--glip-src``) and only injects run-time
stand-ins for the pieces that cannot run on a CPU (see "Stand-ins" below).
GLIP's files are not edited.

Environment set-up (what the reference numbers were measured with)
-------------------------------------------------------------------
    # GLIP source, outside the project (any clone of microsoft/GLIP @ 9dda955)
    git clone https://github.com/microsoft/GLIP /work/glip-src
    # Python 3.11 virtual environment, outside the project
    python3 -m venv /work/glip-venv
    /work/glip-venv/bin/pip install torch torchvision transformers==4.46.3 \
        yacs timm einops ftfy prettytable scipy pycocotools
    # measured with: torch 2.15.0+cu132 (the default PyPI wheel, run on CPU;
    #   MKL + oneDNN 3.13.3), torchvision 0.29.2+cu132, transformers 4.46.3,
    #   tokenizers 0.20.3, timm 1.0.31, numpy 2.4.6, python 3.11.7
    #   (the same versions the goldens in shared/golden were generated with;
    #   the exact versions are also written to --json)

Run
---
    /work/glip-venv/bin/python scripts/baselines/glip_torch.py \
        --glip-src /work/glip-src --threads 2 --json glip_torch_cpu.json
    # on a GPU (fp32, as GLIP's own test script runs; --amp for fp16 autocast):
    python3 scripts/baselines/glip_torch.py --glip-src /work/glip-src --device cuda \
        --runs 20 --json glip_torch_cuda.json

transformers 5.x (the GPU machine's image: 5.17.0, tokenizers 0.23.2) also runs
it: the names GLIP imports that 5.x removed are put back (see "Compatibility
shims"); checked on the CPU with torch 2.11.0, torchvision 0.26.0, transformers
5.17.0, timm 1.0.31 (the image's versions), where pycocotools, ftfy and
prettytable are missing and stubbed.

Model: configs/pretrain/glip_Swin_T_O365_GoldG.yaml (GLIP-T: Swin-T + FPN,
BERT-base language backbone, 6-layer VL DyHead), MODEL.DEVICE=cpu, RANDOM
weights (GLIP's own initialisers, seeded; no checkpoint needed for timing),
eval mode, torch.no_grad().  Input: a random 800x1333 RGB uint8 image through
GLIP's own test transforms (Resize(800, 1333) -> ToTensor -> BGR*255 ->
Normalize), padded by to_image_list to [1, 3, 800, 1344]; caption: the COCO
80-class prompt built by GLIP's create_queries_and_maps ("person. bicycle. car.
..."), which GLIP pads to MAX_QUERY_LEN = 256 tokens (the language backbone and
the fusion layers always see 256 tokens).  One warm-up forward, then the median
of --runs timed forwards of the whole model(images, captions=[caption],
positive_map=label_to_token).  Per-stage times come from wrapping the forward
methods of model.backbone (.body = Swin-T, .fpn), model.language_backbone,
model.rpn (.head = VL DyHead tower + predictions, .anchor_generator,
.box_selector_test = ATSS post-processing incl. NMS).  "other" = total minus
those (mostly tokenisation inside GeneralizedVLRCNN.forward).

Reference result (2-core AMD EPYC dev VM, --threads 2, no GPU)
-------------------------------------------------------------------------------
    total model forward, median of 5: 23.99 s/frame (runs 22.70 22.73 23.99
    25.69 52.14 s; the 52 s run overlapped a concurrent cargo build)
    backbone 2.03 (Swin-T 1.88, FPN 0.15) | BERT language backbone 0.30 |
    VL DyHead 21.57 (VLFuse x6 12.19, DyConv x6 9.07 of which deform_conv2d
    8.28, BertEncoderLayer x6 0.18) | ATSS post-processing 0.03 | peak RSS
    3.6 GB.  Random weights give 0 detections above GLIP's 0.05 threshold,
    so NMS/post-processing cost here is a lower bound (trained weights send up
    to 1000 candidates per level into NMS).  Timings are only meaningful on an
    otherwise idle machine: the script prints the process CPU time and load
    average per forward to show contention.

Stand-ins (run-time only; same as /work/shared/golden/README.md "How GLIP was run")
----------------------------------------------------------------------------------
* ``maskrcnn_benchmark._C`` (the CUDA/C++ extension, not built) is replaced by a
  Python module.  ModulatedDeformConv -> ``torchvision.ops.deform_conv2d(input,
  offset, weight, bias, stride, padding, dilation, mask)``; GLIP's module-level
  ``layers.deform_conv.modulated_deform_conv`` (which refuses CPU tensors) is
  replaced by that function with GLIP's argument order.
* DCN offset quirk of GLIP's CUDA kernel IS emulated: DyConv applies DyConv[0]
  to the next (smaller) FPN level with offsets/mask computed on the current
  level; the CUDA kernel reads each image's buffer offset[b] as [18, h_out,
  w_out], i.e. it uses the first 18*h_out*w_out offset values (9*h_out*w_out
  mask values) in memory order.  The stand-in does exactly that (reshape of the
  flat per-image buffer) so torchvision's shape check passes.
* ``ml_nms``: exact re-implementation of csrc/cuda/ml_nms.cu (greedy per label,
  IoU with +1 widths, kept indices ascending); ``boxlist_ml_nms`` always takes
  GLIP's CUDA branch (its CPU branch concatenates per-class local indices).
* Hub downloads: ``AutoTokenizer.from_pretrained('bert-base-uncased')`` ->
  BertTokenizerFast from the local bert-base-uncased tokenizer files
  (``--tokenizer-dir``, truncation/padding baked into tokenizer.json disabled;
  GLIP passes max_length=256 itself); ``BertConfig.from_pretrained`` ->
  ``BertConfig()`` (= bert-base-uncased dims: 12 layers, 768, 12 heads, 3072);
  ``BertModel.from_pretrained(..., config=c)`` -> ``BertModel(c, ...)``
  (random init).  Attention implementation: ``--bert-attn`` (default "sdpa",
  what transformers 4.46.3's from_pretrained picks for BERT on torch >= 2.1;
  "eager" is what the goldens used; forward-identical up to fp32 rounding).
* transformers 5.x: ``apply_chunking_to_forward``, ``prune_linear_layer``,
  ``find_pruneable_heads_and_indices`` put back in ``transformers.modeling_utils``;
  ``PreTrainedModel.get_extended_attention_mask`` (4.x's encoder formula) and the
  tokenizer's ``batch_encode_plus`` (= ``__call__`` on a list) put back.
* On a GPU: the stage times come from one extra forward with a synchronisation at
  each stage's start and end; the timed forwards have none (one at the end). The
  ml_nms stand-in runs on the host's copy of the IoU matrix (GLIP's CUDA kernel
  is not built): random weights send no candidates to it.
* Compatibility shims (no-ops for the computation): ``torch._six``,
  ``torch.hub._download_url_to_file``, ``np.float = float``, stub modules
  ``cv2``, ``matplotlib``(+``.pyplot``), ``nltk``, ``inflect`` (visualisation /
  NER only, never called on this path).
* ``MODEL.DYHEAD.USE_CHECKPOINT`` stays True as in the yaml
  (torch.utils.checkpoint; under no_grad it is a plain forward call).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import types

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
]


# --------------------------------------------------------------------------- shims
def _stub_module(name):
    """A package-like module whose every attribute is a harmless dummy."""

    class _Dummy:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            return _Dummy()

        def __getattr__(self, item):
            return _Dummy()

    m = types.ModuleType(name)
    m.__path__ = []  # make `import name.sub` possible
    m.__getattr__ = lambda item: _Dummy() if not item.startswith("__") else (_ for _ in ()).throw(AttributeError(item))
    return m


def install_shims(glip_src):
    import numpy as np
    import torch
    import torchvision

    if not hasattr(np, "float"):
        np.float = float  # removed in numpy >= 1.24; GLIP's anchor generator uses it
    six = types.ModuleType("torch._six")
    six.PY3 = True
    six.PY37 = True
    six.string_classes = (str, bytes)
    six.int_classes = int
    six.inf = float("inf")
    sys.modules.setdefault("torch._six", six)
    torch._six = sys.modules["torch._six"]
    if not hasattr(torch.hub, "_download_url_to_file"):
        torch.hub._download_url_to_file = torch.hub.download_url_to_file
    stub_roots = ("cv2", "matplotlib", "nltk", "inflect")
    # Imported by GLIP's dataset/evaluation modules at import time, never called on the
    # forward path: stubbed only where they are not installed (the GPU machine's image).
    import importlib.util
    stub_roots += tuple(n for n in ("pycocotools", "ftfy", "prettytable", "lvis")
                        if importlib.util.find_spec(n) is None)

    class _StubFinder:  # any `import <root>[.sub...]` of a stubbed package gets a stub
        def find_spec(self, fullname, path=None, target=None):
            import importlib.util
            if fullname.split(".")[0] in stub_roots:
                return importlib.util.spec_from_loader(fullname, self)
            return None

        def create_module(self, spec):
            return _stub_module(spec.name)

        def exec_module(self, module):
            pass

    for name in list(sys.modules):
        if name.split(".")[0] in stub_roots:
            del sys.modules[name]
    sys.meta_path.insert(0, _StubFinder())

    install_transformers_compat()
    sys.path.insert(0, os.path.abspath(glip_src))
    import maskrcnn_benchmark  # noqa: F401  (package __init__ only)

    calls = {"modulated_deform_conv": 0, "dcn_offset_quirk": 0, "ml_nms": 0}
    # seconds spent in torchvision.ops.deform_conv2d; [1]: a synchronisation to call around
    # it (set for the staged forward on a GPU, where a kernel's host time is not its time)
    dcn_time = [0.0, None]

    # ---- maskrcnn_benchmark._C stand-in -------------------------------------------
    def modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0,
                              dilation=1, groups=1, deformable_groups=1):
        calls["modulated_deform_conv"] += 1
        kh, kw = weight.shape[2], weight.shape[3]
        n = input.shape[0]
        oh = (input.shape[2] + 2 * padding - (dilation * (kh - 1) + 1)) // stride + 1
        ow = (input.shape[3] + 2 * padding - (dilation * (kw - 1) + 1)) // stride + 1
        if offset.shape[2:] != (oh, ow):
            # GLIP's CUDA kernel reads offset[b] / mask[b] as [C, oh, ow] from the raw buffer.
            calls["dcn_offset_quirk"] += 1
            co = 2 * kh * kw * deformable_groups
            cm = kh * kw * deformable_groups
            offset = offset.contiguous().reshape(n, -1)[:, : co * oh * ow].reshape(n, co, oh, ow)
            mask = mask.contiguous().reshape(n, -1)[:, : cm * oh * ow].reshape(n, cm, oh, ow)
        if dcn_time[1]:
            dcn_time[1]()
        t0 = time.perf_counter()
        out = torchvision.ops.deform_conv2d(
            input, offset, weight, bias, stride=(stride, stride), padding=(padding, padding),
            dilation=(dilation, dilation), mask=mask)
        if dcn_time[1]:
            dcn_time[1]()
        dcn_time[0] += time.perf_counter() - t0
        return out

    def ml_nms(boxes, scores, labels, thresh):
        """csrc/cuda/ml_nms.cu: greedy by descending score, suppress same-label boxes with
        IoU(+1 widths) > thresh, return kept indices in ascending order."""
        calls["ml_nms"] += 1
        if boxes.numel() == 0:
            return torch.empty(0, dtype=torch.long, device=boxes.device)
        order = torch.argsort(scores, descending=True, stable=True)
        b = boxes[order]
        lab = labels[order]
        x1, y1, x2, y2 = b.unbind(1)
        area = (x2 - x1 + 1) * (y2 - y1 + 1)
        ix1 = torch.maximum(x1[:, None], x1[None, :])
        iy1 = torch.maximum(y1[:, None], y1[None, :])
        ix2 = torch.minimum(x2[:, None], x2[None, :])
        iy2 = torch.minimum(y2[:, None], y2[None, :])
        inter = (ix2 - ix1 + 1).clamp(min=0) * (iy2 - iy1 + 1).clamp(min=0)
        iou = inter / (area[:, None] + area[None, :] - inter)
        sup = (iou > thresh) & (lab[:, None] == lab[None, :])
        removed = torch.zeros(len(b), dtype=torch.bool)
        sup_list = sup.cpu().tolist()
        keep = []
        for i in range(len(b)):
            if removed[i]:
                continue
            keep.append(i)
            removed |= torch.tensor(sup_list[i])
        return torch.sort(order[keep]).values

    def _unavailable(*a, **k):
        raise NotImplementedError("not available in the CPU stand-in of maskrcnn_benchmark._C")

    C = types.ModuleType("maskrcnn_benchmark._C")
    C.ml_nms = ml_nms
    C.nms = torchvision.ops.nms
    C.soft_nms = _unavailable
    for name in ["deform_conv_forward", "deform_conv_backward_input",
                 "deform_conv_backward_parameters", "modulated_deform_conv_forward",
                 "modulated_deform_conv_backward", "roi_align_forward", "roi_align_backward",
                 "roi_pool_forward", "roi_pool_backward", "sigmoid_focalloss_forward",
                 "sigmoid_focalloss_backward"]:
        setattr(C, name, _unavailable)
    sys.modules["maskrcnn_benchmark._C"] = C
    maskrcnn_benchmark._C = C

    import maskrcnn_benchmark.layers.deform_conv as dcn_mod
    dcn_mod.modulated_deform_conv = modulated_deform_conv

    import maskrcnn_benchmark.structures.boxlist_ops as bops

    def boxlist_ml_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores",
                       label_field="labels"):
        # GLIP's CUDA branch (the one GLIP-T runs on GPU)
        if nms_thresh <= 0:
            return boxlist
        mode = boxlist.mode
        boxlist = boxlist.convert("xyxy")
        keep = ml_nms(boxlist.bbox, boxlist.get_field(score_field),
                      boxlist.get_field(label_field).float(), nms_thresh)
        if max_proposals > 0:
            keep = keep[:max_proposals]
        return boxlist[keep].convert(mode)

    bops.boxlist_ml_nms = boxlist_ml_nms
    import maskrcnn_benchmark.modeling.rpn.inference as rpn_inf
    rpn_inf.boxlist_ml_nms = boxlist_ml_nms
    return calls, dcn_time


def install_transformers_compat():
    """GLIP was written against transformers 4.x; the GPU machine's image has 5.x. Names GLIP
    imports that 5.x moved or removed are put back where GLIP looks for them (no-ops for the
    computation: each is the same function)."""
    import transformers.modeling_utils as mu

    if not hasattr(mu, "apply_chunking_to_forward"):
        try:
            from transformers.pytorch_utils import apply_chunking_to_forward
        except ImportError:
            import torch

            def apply_chunking_to_forward(forward_fn, chunk_size, chunk_dim, *input_tensors):
                # transformers 4.x: forward_fn over chunks of chunk_size along chunk_dim
                # (GLIP's BERT layer passes chunk_size_feed_forward = 0: one call).
                if chunk_size > 0:
                    n = input_tensors[0].shape[chunk_dim] // chunk_size
                    parts = zip(*(t.chunk(n, dim=chunk_dim) for t in input_tensors))
                    return torch.cat([forward_fn(*p) for p in parts], dim=chunk_dim)
                return forward_fn(*input_tensors)
        mu.apply_chunking_to_forward = apply_chunking_to_forward
    if not hasattr(mu.PreTrainedModel, "get_extended_attention_mask"):
        import torch

        def get_extended_attention_mask(self, attention_mask, input_shape, device=None,
                                        dtype=None):
            # transformers 4.x (encoder case): [B, T] or [B, T, T] 0/1 mask -> additive mask
            # broadcast over heads, 0 where attended and dtype's minimum where masked.
            dtype = dtype or self.dtype
            if attention_mask.dim() == 3:
                ext = attention_mask[:, None, :, :]
            elif attention_mask.dim() == 2:
                ext = attention_mask[:, None, None, :]
            else:
                raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)}")
            ext = ext.to(dtype=dtype)
            return (1.0 - ext) * torch.finfo(dtype).min

        mu.PreTrainedModel.get_extended_attention_mask = get_extended_attention_mask
    # GLIP's own BERT layer imports the head-pruning helpers; pruning is never called.
    for name in ("prune_linear_layer", "find_pruneable_heads_and_indices"):
        if not hasattr(mu, name):
            import transformers.pytorch_utils as pu

            def _not_on_this_path(*a, _name=name, **k):
                raise NotImplementedError(f"{_name}: head pruning is not on GLIP's forward path")

            setattr(mu, name, getattr(pu, name, _not_on_this_path))


def install_hub_standins(tokenizer_dir, bert_attn):
    import transformers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    def tok_from_pretrained(cls, name, *a, **k):
        assert name == "bert-base-uncased", name
        tok = BertTokenizerFast.from_pretrained(tokenizer_dir)
        tok._tokenizer.no_truncation()
        tok._tokenizer.no_padding()
        if not hasattr(type(tok), "batch_encode_plus"):
            # transformers 5.x removed it; it was __call__ on a list of texts.
            type(tok).batch_encode_plus = lambda self, texts, **kw: self(list(texts), **kw)
        return tok

    def cfg_from_pretrained(cls, name, *a, **k):
        assert name == "bert-base-uncased", name
        c = BertConfig()  # defaults == bert-base-uncased
        c._attn_implementation = bert_attn
        return c

    def model_from_pretrained(cls, name, *a, config=None, **k):
        assert name == "bert-base-uncased", name
        if config is None:
            config = cfg_from_pretrained(None, name)
        config._attn_implementation = bert_attn
        return cls(config, **k)

    transformers.AutoTokenizer.from_pretrained = classmethod(tok_from_pretrained)
    BertConfig.from_pretrained = classmethod(cfg_from_pretrained)
    BertModel.from_pretrained = classmethod(model_from_pretrained)


# --------------------------------------------------------------------------- timing
class StageTimer:
    """Wall time of wrapped modules' forwards. On a GPU `sync` (torch.cuda.synchronize) is
    called at each start and end, and only while `on`: the staged forward, not the timed
    ones."""

    def __init__(self, sync=None):
        self.acc = {}
        self.sync = sync
        self.on = True

    def wrap(self, name, module):
        orig = module.forward

        def timed(*a, **k):
            if not self.on:
                return orig(*a, **k)
            if self.sync:
                self.sync()
            t0 = time.perf_counter()
            out = orig(*a, **k)
            if self.sync:
                self.sync()
            self.acc[name] = self.acc.get(name, 0.0) + time.perf_counter() - t0
            return out

        module.forward = timed

    def reset(self):
        self.acc = {}


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--glip-src", required=True, help="path to a microsoft/GLIP checkout")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", action="store_true",
                    help="fp16 autocast on a GPU (GLIP's test script runs fp32)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (--device cpu)")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--runs", type=int, default=3, help="timed forwards (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--height", type=int, default=800, help="source image height")
    ap.add_argument("--width", type=int, default=1333, help="source image width")
    ap.add_argument("--config", default="configs/pretrain/glip_Swin_T_O365_GoldG.yaml",
                    help="relative to --glip-src")
    ap.add_argument("--tokenizer-dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "models",
        "bert-base-uncased"), help="dir with bert-base-uncased tokenizer.json / vocab.txt")
    ap.add_argument("--bert-attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not os.path.isdir(args.tokenizer_dir):
        args.tokenizer_dir = "/work/shared/models/bert-base-uncased"
    if not os.path.isdir(args.tokenizer_dir):
        # glip-rt's own copy of the tokenizer (tokenizer.json), in the tracked tree
        args.tokenizer_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                          "..", "assets", "bert-base-uncased")

    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import numpy as np
    import torch
    import torchvision
    import transformers
    import tokenizers
    from PIL import Image

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    calls, dcn_time = install_shims(args.glip_src)
    install_hub_standins(args.tokenizer_dir, args.bert_attn)

    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling.detector import build_detection_model
    from maskrcnn_benchmark.data.transforms import build_transforms
    from maskrcnn_benchmark.structures.image_list import to_image_list
    from maskrcnn_benchmark.engine.inference import create_queries_and_maps

    cfg.merge_from_file(os.path.join(args.glip_src, args.config))
    cfg.merge_from_list(["MODEL.DEVICE", args.device])
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU")
    sync = torch.cuda.synchronize if cuda else None
    cfg.freeze()

    rss0 = rss_mib()
    t0 = time.perf_counter()
    model = build_detection_model(cfg)
    model.to(args.device).eval()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    rss_model = rss_mib()

    # input image through GLIP's own test transforms
    rng = np.random.default_rng(args.seed)
    img = Image.fromarray(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8), "RGB")
    transform = build_transforms(cfg, is_train=False)
    t0 = time.perf_counter()
    image = transform(img)
    images = to_image_list(image, cfg.DATALOADER.SIZE_DIVISIBILITY).to(args.device)
    if sync:
        sync()
    preprocess_s = time.perf_counter() - t0

    # COCO 80-class prompt, exactly as GLIP's eval path builds it
    caption, label_to_token = create_queries_and_maps(list(range(1, 81)), list(COCO80), cfg=cfg)
    n_real_tokens = len(model.tokenizer(caption)["input_ids"])

    timer = StageTimer(sync)
    timer.wrap("backbone", model.backbone)
    timer.wrap("backbone.body (Swin-T)", model.backbone.body)
    timer.wrap("backbone.fpn", model.backbone.fpn)
    timer.wrap("language_backbone (BERT)", model.language_backbone)
    timer.wrap("rpn", model.rpn)
    timer.wrap("rpn.head (VL DyHead)", model.rpn.head)
    timer.wrap("rpn.anchor_generator", model.rpn.anchor_generator)
    timer.wrap("rpn.box_selector_test (ATSS post)", model.rpn.box_selector_test)
    tower_kinds = []
    for m in model.rpn.head.dyhead_tower:
        kind = type(m).__name__
        n_kind = sum(type(x).__name__ == kind for x in model.rpn.head.dyhead_tower)
        name = f"rpn.head tower: {kind} x{n_kind}"
        if name not in tower_kinds:
            tower_kinds.append(name)
        timer.wrap(name, m)
    lang_attn = type(model.language_backbone.body.model.encoder.layer[0].attention.self).__name__

    import contextlib
    amp = (torch.autocast("cuda", dtype=torch.float16) if cuda and args.amp
           else contextlib.nullcontext())

    def forward(staged=True):
        timer.reset()
        timer.on = staged
        dcn_time[0] = 0.0
        dcn_time[1] = sync if staged else None
        with open("/proc/loadavg") as f:
            load_before = float(f.read().split()[0])
        if sync:
            sync()
        c = time.process_time()
        t = time.perf_counter()
        with torch.no_grad(), amp:
            out = model(images, captions=[caption], positive_map=label_to_token)
        if sync:
            sync()
        wall = time.perf_counter() - t
        acc = dict(timer.acc)
        acc["  of which deform_conv2d (78 DCN calls)"] = dcn_time[0]
        cpu_log.append({"wall_s": wall, "process_cpu_s": time.process_time() - c,
                         "loadavg1_before": load_before})
        return wall, acc, out

    cpu_log = []  # process CPU time per forward: cpu/wall well below --threads = contention
    for i in range(args.warmup):
        wt, _, out = forward()
        print(f"warm-up forward {i}: {wt:.3f} s", flush=True)
    totals, stages = [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.runs):
        # on a GPU the timed forwards have no per-stage synchronisation
        tt, st, out = forward(staged=not cuda)
        totals.append(tt)
        stages.append(st)
        print(f"timed forward {i}: {tt:.3f} s (process CPU {cpu_log[-1]['process_cpu_s']:.1f} s, "
              f"loadavg before {cpu_log[-1]['loadavg1_before']:.2f})", flush=True)
    n_det = len(out[0])
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB
    gpu = {}
    if cuda:
        gpu = {"name": torch.cuda.get_device_name(),
               "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
               "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
        # the stage table from one more forward, synchronised at every stage boundary
        staged_total, staged, _ = forward(staged=True)
        print(f"staged forward: {staged_total * 1e3:.2f} ms", flush=True)
        stages_for_table, totals_for_table = [staged], [staged_total]
    else:
        stages_for_table, totals_for_table = stages, totals

    med = statistics.median(totals)
    stage_med = {k: statistics.median(s[k] for s in stages_for_table) for k in stages_for_table[0]}
    top = ["backbone", "language_backbone (BERT)", "rpn"]
    other = statistics.median(t - sum(s[k] for k in top)
                              for t, s in zip(totals_for_table, stages_for_table))
    stage_med["other (tokenizer, glue)"] = other

    order = ["backbone", "backbone.body (Swin-T)", "backbone.fpn", "language_backbone (BERT)",
             "rpn", "rpn.head (VL DyHead)", *tower_kinds,
             "  of which deform_conv2d (78 DCN calls)", "rpn.anchor_generator",
             "rpn.box_selector_test (ATSS post)", "other (tokenizer, glue)"]
    print()
    where = (f"{gpu['name']} forward ({'fp16 autocast' if args.amp else 'fp32'})" if cuda
             else f"CPU forward, {args.threads} thread(s)")
    print(f"GLIP-T (microsoft/GLIP, PyTorch {torch.__version__}) {where}, "
          f"input {list(images.tensors.shape)} "
          f"(image {args.height}x{args.width} -> {list(image.shape[1:])}), "
          f"{256} tokens ({n_real_tokens} real), random weights")
    print(f"{'stage':46s} {'median s' if not cuda else 'staged s':>10s} {'share':>7s}")
    print("-" * 65)
    for k in order:
        ind = "    " if "tower" in k or "deform" in k else ("  " if "." in k.split(" ")[0] else "")
        share = stage_med[k] / (med if not cuda else totals_for_table[0])
        print(f"{ind + k.strip():46s} {stage_med[k]:10.4f} {100 * share:6.1f}%")
    print("-" * 65)
    print(f"{'TOTAL model forward (median of %d)' % args.runs:46s} {med:10.4f}")
    if cuda:
        print(f"GPU: p50 {1e3 * med:.2f} ms, p99 {1e3 * sorted(totals)[min(len(totals) - 1, int(0.99 * len(totals)))]:.2f} ms, "
              f"peak allocated {gpu['peak_allocated_mib']:.0f} MiB")
    print(f"all timed runs: {', '.join(f'{t:.3f}' for t in totals)} s (min {min(totals):.3f} s)")
    print("NOTE: the machine must be otherwise idle; a cpu/wall ratio well below the thread "
          "count or a loadavg above it means another process competed for the cores")
    print(f"preprocess (transforms + to_image_list, not in total): {preprocess_s:.3f} s")
    print(f"peak RSS: {peak_rss:.0f} MiB (RSS before model {rss0:.0f} MiB, after build "
          f"{rss_model:.0f} MiB); params {n_params / 1e6:.1f} M; detections {n_det}")
    print(f"stand-in calls (all forwards): {calls}; language backbone attention: {lang_attn}")

    res = {
        "what": f"microsoft/GLIP GLIP-T forward on {args.device} (original PyTorch code, random weights)",
        "device": args.device,
        "amp": bool(cuda and args.amp),
        "gpu": gpu,
        "config": args.config,
        "threads": args.threads,
        "input_tensor_shape": list(images.tensors.shape),
        "resized_image_hw": list(image.shape[1:]),
        "source_image_hw": [args.height, args.width],
        "tokens": 256,
        "real_tokens": n_real_tokens,
        "caption": caption,
        "warmup": args.warmup,
        "runs_s": totals,
        "median_s": med,
        "min_s": min(totals),
        "per_forward_cpu": cpu_log,
        "stages_median_s": stage_med,
        "stages_per_run_s": stages,
        "preprocess_s": preprocess_s,
        "build_s": build_s,
        "peak_rss_mib": peak_rss,
        "rss_after_build_mib": rss_model,
        "params": n_params,
        "detections": n_det,
        "standin_calls": calls,
        "bert_attn": args.bert_attn,
        "language_backbone_attention_class": lang_attn,
        "use_checkpoint": bool(cfg.MODEL.DYHEAD.USE_CHECKPOINT),
        "dcn_offset_quirk_emulated": True,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "torch_parallel_info": torch.__config__.parallel_info().splitlines()[:8],
        },
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    res["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
