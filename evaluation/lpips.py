"""LPIPS (Zhang et al. 2018, version 0.1) without the ``lpips`` package, from two local files: the
torchvision backbone's state dict and the release's linear layers.

What the ``lpips`` package computes for ``LPIPS(net=..., version="0.1")`` on inputs in [-1, 1]:
the inputs shifted and scaled per channel (shift -0.030, -0.088, -0.188; scale 0.458, 0.448,
0.450), five ReLU outputs of the backbone's ``features`` (AlexNet: after layers 1, 4, 7, 9, 11;
VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3), each unit-normalised over channels
(``x / (||x|| + 1e-10)``), the squared difference weighted per channel by a 1x1 convolution
without bias (the linear layers ``lin0..lin4``), averaged over space and summed over the layers.

Weights (neither is ever downloaded):

- ``eval.lpips_weights``: the linear layers, the file the lpips release ships as
  ``lpips/weights/v0.1/alex.pth`` (or ``vgg.pth``): keys ``lin<k>.model.<j>.weight``;
- ``eval.lpips_backbone``: the torchvision ImageNet backbone the lpips package builds on
  (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``), as a state-dict file; only its
  ``features.*`` tensors are used.

Not checked against the ``lpips`` package here (it is not a dependency); the tests check the
definition's properties on random weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from anycharv.errors import InputError

SLICES = {"alex": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
          "vgg": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]}
CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_LIN_KEY = re.compile(r"^lin(\d+)\.model\.\d+\.weight$")


def _backbone(net: str) -> nn.Sequential:
    import torchvision

    model = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
    return model.features


def _load(path: str, field: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{field} {path}", f"not a readable state-dict file ({type(exc).__name__}: {exc})",
                         code="bad_weights") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{field} {path}", "not a state dict (a mapping of names to tensors)", code="bad_weights")
    return state


class LPIPS(nn.Module):
    """``LPIPS(net, backbone_file, lin_file)(x, y)``: (N,3,H,W) images in [-1, 1] -> (N,) distances."""

    def __init__(self, net: str, backbone_file: str, lin_file: str):
        super().__init__()
        if net not in SLICES:
            raise InputError("eval.lpips_net", f"unknown backbone {net!r} (alex or vgg)", code="bad_option")
        self.net = net
        self.features = _backbone(net)
        state = _load(backbone_file, "eval.lpips_backbone")
        wanted = set(self.features.state_dict())
        features = {k.removeprefix("features."): v for k, v in state.items()
                    if k.startswith("features.") or k in wanted}
        missing = sorted(wanted - set(features))
        if missing:
            raise InputError(f"eval.lpips_backbone {backbone_file}", f"not a torchvision {net} state dict: "
                             f"{len(missing)} features tensors missing (e.g. features.{missing[0]})",
                             code="bad_weights")
        try:
            self.features.load_state_dict({k: features[k] for k in wanted})
        except RuntimeError as exc:
            raise InputError(f"eval.lpips_backbone {backbone_file}", f"does not fit torchvision's {net} ({exc})",
                             code="bad_weights") from exc
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        lin_state = _load(lin_file, "eval.lpips_weights")
        found = {}
        for key, value in lin_state.items():
            match = _LIN_KEY.match(key)
            if match:
                found[int(match.group(1))] = value
        for k, conv in enumerate(self.lins):
            value = found.get(k)
            if value is None or tuple(value.shape) != tuple(conv.weight.shape):
                got = None if value is None else tuple(value.shape)
                raise InputError(f"eval.lpips_weights {lin_file}", f"no lin{k} weight of shape "
                                 f"{tuple(conv.weight.shape)} for {net} (got {got}; keys lin<k>.model.<j>.weight)",
                                 code="bad_weights")
            with torch.no_grad():
                conv.weight.copy_(value)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.shift) / self.scale, []
        for start, stop in SLICES[self.net]:
            for i in range(start, stop):
                h = self.features[i](h)
            out.append(h)
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], device=x.device)
        for fx, fy, lin in zip(self._layers(x), self._layers(y), self.lins):
            nx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total
