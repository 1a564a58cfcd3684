"""CPU fallback for torchvision's compiled ops, loaded through a ``.pth`` file.

The registry's torchvision 0.28.0 is a CUDA build: with a CPU-only torch its ``_C`` extension cannot
load, ``import torchvision`` then fails (``operator torchvision::nms does not exist``) and takes
ultralytics and diffusers with it. This hook runs only when ``torchvision`` is first imported; it tries
the real extension first and, only if that fails, defines ``torchvision::nms`` (pure-torch CPU kernel)
and the ``qnms`` schema so torchvision's own fake registrations succeed. With a working torchvision
(GPU machines, or a matching CPU build) it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_LIB = None  # keeps the torch.library.Library alive


def _nms_cpu(dets, scores, iou_threshold: float):
    import torch

    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=dets.device)
    boxes = dets.float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    keep = []
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        xx1 = torch.maximum(x1[idx], x1)
        yy1 = torch.maximum(y1[idx], y1)
        xx2 = torch.minimum(x2[idx], x2)
        yy2 = torch.minimum(y2[idx], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[idx] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _extension_loads(package_dir: Path) -> bool:
    import torch

    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
        return True
    except (OSError, RuntimeError):
        return False


def _register_fallback() -> None:
    global _LIB
    import torch

    try:
        torch.ops.torchvision.nms.default  # already defined (real extension or earlier fallback)
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.impl("nms", _nms_cpu, "CPU")


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the real ``torchvision`` package until it has actually been executed.

    Availability checks (``importlib.util.find_spec("torchvision")``, as transformers does) also come
    through here; the hook stays installed until the real import runs, then steps aside.
    """

    # Another copy of this module (the installed hook and one loaded by a test, say) installs
    # its own finder; each must skip every copy, or the two would ask each other forever.
    anycharv_torchvision_finder = True

    def __init__(self):
        self._extension_ok: bool | None = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        spec = None
        for finder in sys.meta_path:
            if getattr(finder, "anycharv_torchvision_finder", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or not spec.submodule_search_locations:
            return spec
        if self._extension_ok is None:
            self._extension_ok = _extension_loads(Path(next(iter(spec.submodule_search_locations))))
        if self._extension_ok:
            self._remove()
            return spec
        _register_fallback()
        spec.loader = _FlagOpsLoader(spec.loader, self)
        return spec

    def _remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def _fallback_has_ops() -> bool:
    return True


class _FlagOpsLoader(importlib.abc.Loader):
    """Runs torchvision's own import, then marks its ops as present (``nms`` now is); ops without a
    fallback still fail, with torch's "no such operator" error naming them."""

    def __init__(self, inner, finder: _TorchvisionFinder):
        self._inner = inner
        self._finder = finder

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        self._finder._remove()
        extension = sys.modules.get("torchvision.extension")
        if extension is not None:
            extension._has_ops = _fallback_has_ops


def install() -> None:
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionFinder())


install()
