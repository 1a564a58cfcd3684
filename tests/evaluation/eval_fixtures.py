"""What the evaluation tests run on (plain functions that ``conftest.py`` wraps as fixtures;
loaded by path, tests/ is not a package): a real small latent cache made by the cache job
from the latent-cache tests' preprocessing output (``tests/latent_cache/prep_output.py``: three
source videos, two 8-frame clips each, two buckets, one video held out as the val split) with the
tiny encoders, the tiny networks saved as an exported model folder, and small real metric networks
(random weights) in the file formats the optional metrics read."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import torch

PREP_MODULE = "anycharv_test_prep_output"  # the name tests/latent_cache/conftest.py registers it under
CACHE_OVERRIDES = ["cache.buckets=[[64,32],[32,64]]", "cache.val_fraction=0.3", "cache.samples_per_shard=2",
                   "cache.num_references=2", "runtime.executor=local", "runtime.progress=false"]


def _prep_output_module():
    if PREP_MODULE not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "latent_cache" / "prep_output.py"
        spec = importlib.util.spec_from_file_location(PREP_MODULE, path)
        sys.modules[PREP_MODULE] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[PREP_MODULE])
    return sys.modules[PREP_MODULE]


def build_cache(root: Path) -> Path:
    """The cache under ``root`` (read-only for the tests: copy it before changing anything in it)."""
    from anycharv.config import load_config
    from anycharv.latent_cache.config import CacheJob, EncoderSource
    from anycharv.latent_cache.runner import run_cache

    prep = _prep_output_module().make_prep_output(root / "prep")
    out = root / "cache"
    summary = run_cache(load_config(CacheJob, None, CACHE_OVERRIDES), str(prep), str(out),
                        EncoderSource(preset="tiny"))
    assert summary.samples == 6 and summary.splits == {"train": 4, "val": 2}
    return out


def build_model(root: Path, seed: int = 0) -> Path:
    """The tiny networks (the preset's) as diffusers folders under ``root``, as an export writes them."""
    from anycharv.model.tiny import build_tiny_components

    for name, module in build_tiny_components(seed=seed, with_vae=False, with_image_encoder=False).items():
        module.save_pretrained(root / name)
    return root


def build_metric_weights(root: Path) -> dict[str, str]:
    """Real networks with random weights, saved as the optional metrics expect them:
    a CLIP vision folder, a DINOv2 folder, a torchvision inception_v3 state dict, a TorchScript
    I3D stand-in with StyleGAN-V's call signature, and LPIPS's two files (alexnet features + lin)."""
    import torchvision
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8)).save_pretrained(root / "clip")
    Dinov2Model(Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=32, patch_size=8)).save_pretrained(root / "dino")
    (root / "dino" / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.485, 0.456, 0.406],
         "image_std": [0.229, 0.224, 0.225]}))
    inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    for module in inception.modules():  # batch-norm statistics of random inputs, so features keep their scale
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        inception.train()(torch.rand(4, 3, 299, 299) * 2 - 1)
    torch.save(inception.state_dict(), root / "inception_v3.pth")
    with warnings.catch_warnings():  # torch 2.13 deprecates scripting; the file format is what StyleGAN-V ships
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyI3D()).save(str(root / "i3d_torchscript.pt"))
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save({f"features.{k}": v for k, v in alexnet.features.state_dict().items()}, root / "alexnet.pth")
    channels = [64, 192, 384, 256, 256]
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) / c for k, c in enumerate(channels)},
               root / "lpips_alex.pth")
    return {"clip": str(root / "clip"), "dino": str(root / "dino"), "fid": str(root / "inception_v3.pth"),
            "fvd": str(root / "i3d_torchscript.pt"), "lpips_backbone": str(root / "alexnet.pth"),
            "lpips": str(root / "lpips_alex.pth")}


class TinyI3D(torch.nn.Module):
    """A small real 3D conv net with the call signature of StyleGAN-V's ``i3d_torchscript.pt``:
    ``(videos [B,3,T,H,W] uint8 in [0,255], rescale, resize, return_features) -> [B, D]``."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 24, kernel_size=3, padding=1)
        self.head = torch.nn.Linear(24, 10)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        video = x.float()
        if rescale:
            video = video / 127.5 - 1
        if resize:
            video = torch.nn.functional.interpolate(video, size=(video.shape[2], 32, 32), mode="trilinear",
                                                    align_corners=False)
        features = torch.relu(self.conv(video)).mean(dim=(2, 3, 4))
        return features if return_features else self.head(features)
