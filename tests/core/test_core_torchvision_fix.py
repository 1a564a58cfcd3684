"""The CPU nms fallback agrees with a brute-force greedy NMS."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _load_fix():
    spec = importlib.util.spec_from_file_location("tv_fix_under_test", REPO / "tools" / "torchvision_cpu_fix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _greedy(boxes, scores, thr):
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_matches_bruteforce():
    fix = _load_fix()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        xy = torch.rand(40, 2, generator=gen) * 100
        wh = torch.rand(40, 2, generator=gen) * 30 + 1
        boxes = torch.cat([xy, xy + wh], 1)
        scores = torch.rand(40, generator=gen)
        got = fix._nms_cpu(boxes, scores, 0.4).tolist()
        assert got == _greedy(boxes.tolist(), scores.tolist(), 0.4)
    assert fix._nms_cpu(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
