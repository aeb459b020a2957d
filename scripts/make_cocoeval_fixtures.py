#!/usr/bin/env python3
"""Makes the fixtures of tests/cocoeval.rs: random COCO ground truth and detections, and the
12 numbers pycocotools' COCOeval (iouType='bbox') gives for them; and random LVIS ground
truth and detections with the 13 numbers the LVIS API's LVISEval (bbox) gives.

    python3 -m pip install pycocotools lvis numpy   # what the committed fixtures were made with:
                                                 # pycocotools 2.0.11, lvis 0.5.3, numpy 2.4 (see *_expected.json)
    python3 scripts/make_cocoeval_fixtures.py tests/testdata/cocoeval

Each case NAME writes NAME_gt.json, NAME_dt.json and NAME_expected.json (the stats, the
versions that made them). The cases cover what the evaluator's rules turn on: crowd boxes,
images without annotations, categories without ground truth or without detections, equal
scores, more than 100 detections on an image, an `area` field unlike the box's, boxes of
every area range, detections far from any ground truth.
"""
import contextlib
import importlib.metadata
import io
import json
import os
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def make_case(seed, n_images, n_cats, crowd_share, score_decimals, max_dets_image):
    rng = np.random.default_rng(seed)
    images = [{"id": int(i), "width": 640, "height": 480} for i in range(1, n_images + 1)]
    cats = [{"id": int(c), "name": f"cat{c}"} for c in range(1, n_cats + 1)]
    anns, dets = [], []
    ann_id = 1
    for img in images:
        if rng.random() < 0.15:
            continue  # an image with no annotation at all
        for _ in range(int(rng.integers(0, 12))):
            # Box sizes across small (< 32^2), medium and large (> 96^2).
            w, h = (float(v) for v in np.exp(rng.uniform(np.log(4), np.log(300), 2)))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            w, h, x, y = (round(v, 2) for v in (w, h, x, y))
            crowd = int(rng.random() < crowd_share)
            # The annotation's area (a segmentation's) is not its box's.
            area = round(w * h * float(rng.uniform(0.6, 1.0)), 2)
            cat = int(rng.integers(1, n_cats + 1))
            anns.append({"id": ann_id, "image_id": img["id"], "category_id": cat,
                         "bbox": [x, y, w, h], "area": area, "iscrowd": crowd})
            ann_id += 1
            # Detections near it: some good, some shifted, sometimes the wrong category.
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
                b = [x + jit[0], y + jit[1], max(1.0, w + jit[2]), max(1.0, h + jit[3])]
                c = cat if rng.random() < 0.85 else int(rng.integers(1, n_cats + 1))
                dets.append({"image_id": img["id"], "category_id": c,
                             "bbox": [round(float(v), 2) for v in b],
                             "score": round(float(rng.random()), score_decimals)})
        # False positives anywhere, and now and then a flood past maxDets=100.
        n_fp = int(rng.integers(0, 6)) if rng.random() > 0.1 else max_dets_image
        for _ in range(n_fp):
            w, h = (float(v) for v in np.exp(rng.uniform(np.log(4), np.log(300), 2)))
            b = [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), w, h]
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, n_cats + 1)),
                         "bbox": [round(v, 2) for v in b],
                         "score": round(float(rng.random()), score_decimals)})
    return {"images": images, "categories": cats, "annotations": anns}, dets


def evaluate(gt_path, dt_path):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.summarize()
    return [float(s) for s in ev.stats], out.getvalue()


CASES = {
    # name: (seed, images, categories, crowd share, score decimals, flood size)
    "small": (1, 12, 5, 0.1, 2, 130),
    "many_categories": (2, 40, 60, 0.05, 3, 150),
    "crowded": (3, 25, 8, 0.35, 1, 120),
}


def make_lvis_case(seed, n_images, n_cats, flood):
    """LVIS's federated annotation: per image the categories verified absent
    (neg_category_ids) and those not exhaustively annotated; per category a frequency
    group; detections of categories neither present nor verified absent (dropped by the
    rules), and one image flooded past 300 detections."""
    rng = np.random.default_rng(seed)
    cats = [{"id": int(c), "name": f"cat{c}", "frequency": "rcf"[int(rng.integers(0, 3))]}
            for c in range(1, n_cats + 1)]
    images, anns, dets = [], [], []
    ann_id = 1
    for i in range(1, n_images + 1):
        present = set()
        for _ in range(int(rng.integers(0, 10))):
            w, h = (float(v) for v in np.exp(rng.uniform(np.log(4), np.log(300), 2)))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            w, h, x, y = (round(v, 2) for v in (w, h, x, y))
            cat = int(rng.integers(1, n_cats + 1))
            present.add(cat)
            anns.append({"id": ann_id, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                         "area": round(w * h * float(rng.uniform(0.6, 1.0)), 2)})
            ann_id += 1
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
                b = [x + jit[0], y + jit[1], max(1.0, w + jit[2]), max(1.0, h + jit[3])]
                dets.append({"image_id": i, "category_id": cat, "bbox": [round(float(v), 2) for v in b],
                             "score": round(float(rng.random()), 2)})
        absent = [c for c in range(1, n_cats + 1) if c not in present]
        neg = sorted(int(c) for c in rng.choice(absent, size=min(len(absent), int(rng.integers(0, 6))), replace=False)) if absent else []
        not_exh = sorted(int(c) for c in present if rng.random() < 0.3)
        images.append({"id": i, "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg",
                       "width": 640, "height": 480, "neg_category_ids": neg,
                       "not_exhaustive_category_ids": not_exh})
        n_fp = int(rng.integers(0, 8)) if i != 1 else flood
        for _ in range(n_fp):
            w, h = (float(v) for v in np.exp(rng.uniform(np.log(4), np.log(300), 2)))
            b = [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), w, h]
            dets.append({"image_id": i, "category_id": int(rng.integers(1, n_cats + 1)),
                         "bbox": [round(v, 2) for v in b], "score": round(float(rng.random()), 2)})
    return {"images": images, "categories": cats, "annotations": anns}, dets


def evaluate_lvis(gt_path, dt_path):
    if not hasattr(np, "float"):
        np.float = float  # lvis 0.5.3's accumulate uses it (removed in numpy 1.24)
    from lvis import LVIS, LVISEval, LVISResults
    with contextlib.redirect_stdout(io.StringIO()):
        gt = LVIS(gt_path)
        ev = LVISEval(gt, LVISResults(gt, dt_path), "bbox")
        ev.run()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.print_results()
    return [float(v) for v in ev.get_results().values()], out.getvalue()


LVIS_CASES = {
    # name: (seed, images, categories, flood size)
    "lvis_small": (11, 20, 12, 340),
    "lvis_many_categories": (12, 40, 80, 320),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/testdata/cocoeval"
    os.makedirs(out, exist_ok=True)
    for name, args in CASES.items():
        gt, dets = make_case(*args)
        gp, dp = os.path.join(out, f"{name}_gt.json"), os.path.join(out, f"{name}_dt.json")
        with open(gp, "w") as f:
            json.dump(gt, f)
        with open(dp, "w") as f:
            json.dump(dets, f)
        stats, table = evaluate(gp, dp)
        with open(os.path.join(out, f"{name}_expected.json"), "w") as f:
            json.dump({"stats": stats, "table": table,
                       "made_with": {"pycocotools": importlib.metadata.version("pycocotools"),
                                     "numpy": np.__version__, "case": list(args)}}, f, indent=1)
        print(name, len(gt["annotations"]), "annotations,", len(dets), "detections")
        print(table)
    for name, args in LVIS_CASES.items():
        gt, dets = make_lvis_case(*args)
        gp, dp = os.path.join(out, f"{name}_gt.json"), os.path.join(out, f"{name}_dt.json")
        with open(gp, "w") as f:
            json.dump(gt, f)
        with open(dp, "w") as f:
            json.dump(dets, f)
        stats, table = evaluate_lvis(gp, dp)
        with open(os.path.join(out, f"{name}_expected.json"), "w") as f:
            json.dump({"stats": stats, "table": table,
                       "made_with": {"lvis": importlib.metadata.version("lvis"),
                                     "numpy": np.__version__, "case": list(args)}}, f, indent=1)
        print(name, len(gt["annotations"]), "annotations,", len(dets), "detections")
        print(table)


if __name__ == "__main__":
    main()
