"""Load the official AnyCharV release (Moore-AnimateAnyone state-dict naming) into our classes.

Accepted layouts (local folder or Hugging Face hub id):

* release: ``reference_unet.*``, ``denoising_unet.*``, ``pose_guider.*`` (``.safetensors``, or
  ``.pth/.pt/.bin/.ckpt`` read with ``torch.load(weights_only=True)``), optional ``motion_module.*``
  merged into the denoising UNet; configs default to the released (SD-1.5 sized) architecture;
* golden fixture: ``weights/*.safetensors`` + ``configs/*.json`` (``constructor_kwargs`` /
  ``resolved_config`` of the official classes), incl. ``vae`` and ``image_encoder``.

Every key is checked: missing, unexpected or mis-shaped tensors raise ``WeightsError`` naming them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from anycharv.errors import ConfigError, WeightsError
from anycharv.model import official_configs as oc
from anycharv.model.denoising_unet import DenoisingUNet3D
from anycharv.model.pose_guider import PoseGuider
from anycharv.model.reference_unet import ReferenceUNet2D
from anycharv.model.safetensors_read import read_safetensors

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_PE = re.compile(r"\.pos_encoder\.pe$")
# state-dict wrappers some trainers add
_PREFIXES = ("module.", "_orig_mod.")
# present in some ReferenceNet checkpoints (copied from the SD UNet) but unused by design
_REFERENCE_UNUSED = re.compile(r"^(conv_norm_out|conv_out)\.")
_ALIGNMENT = 64  # bytes: what torch's CPU allocator gives, and what the tests' numerics were made with


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Safetensors, or a foreign torch file loaded with ``weights_only=True`` (never unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read with torch.load(weights_only=True) ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise WeightsError(f"{path}: not a flat state dict of tensors")
    return dict(data)


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official -> our names. Our modules reuse the official/diffusers names, so only wrapper
    prefixes need stripping; kept as one function so a future naming change has one place to go."""
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                 optional: Callable[[str], bool] = lambda key: False,
                 ignorable: Callable[[str], bool] = lambda key: False) -> None:
    """Strict load with errors that name the keys. ``optional`` keys may be absent (deterministic
    buffers, kept as built); ``ignorable`` extra keys are dropped with a log line."""
    expected = model.state_dict()
    check_keys(expected, state, source, optional, ignorable)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def check_keys(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str,
               optional: Callable[[str], bool], ignorable: Callable[[str], bool]) -> None:
    """Missing, unexpected and mis-shaped keys raise one ``WeightsError`` naming them."""
    missing = sorted(k for k in expected if k not in state and not optional(k))
    unexpected = sorted(k for k in state if k not in expected and not ignorable(k))
    problems = []
    if missing:
        problems.append(f"missing key(s): {short_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s): {short_keys(unexpected)}")
    for key in sorted(set(state) & set(expected)):
        if tuple(state[key].shape) != tuple(expected[key].shape):
            problems.append(
                f"shape mismatch for {key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
            )
    if problems:
        raise WeightsError(f"{source}: " + "; ".join(problems))
    dropped = [k for k in state if k not in expected]
    if dropped:
        logger.info("%s: ignoring %d unused key(s): %s", source, len(dropped), short_keys(dropped))


def build_and_load(factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], source: str,
                   optional: Callable[[str], bool] = lambda key: False,
                   ignorable: Callable[[str], bool] = lambda key: False) -> nn.Module:
    """``factory()`` built on the meta device, then given the checkpoint's tensors themselves
    (``assign``; cast to the built dtypes, copied only where misaligned), consuming ``state``: no
    random initialisation and no second copy of the weights, so peak memory is one model, not two.
    Same checks as ``load_checked``; anything the checkpoint does not provide must be built on a
    real device by the model itself (optional buffers such as the position tables), else the load
    fails naming it."""
    with torch.device("meta"):
        model = factory()
    expected = model.state_dict()
    check_keys(expected, state, source, optional, ignorable)
    tensors = {}
    for key in [k for k in state if k in expected]:
        value = state.pop(key)  # consumed one by one: each original is freed once its copy exists
        if value.dtype != expected[key].dtype:
            value = value.to(expected[key].dtype)
        elif value.data_ptr() % _ALIGNMENT:  # memory-mapped safetensors sit 8 bytes off; kernels want aligned ones
            value = value.clone()
        tensors[key] = value
    model.load_state_dict(tensors, strict=False, assign=True)
    for module in model.modules():  # deterministic buffers the checkpoint left out
        if hasattr(module, "rebuild_buffers") and any(b.is_meta for b in module.buffers(recurse=False)):
            module.rebuild_buffers("cpu")
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise WeightsError(f"{source}: no values for {short_keys(sorted(left))}")
    return model


def short_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in WEIGHT_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _resolve(src: str | Path) -> Path:
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise WeightsError(f"{src}: expected a folder with the official AnyCharV weights")
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(src)):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(src), allow_patterns=["*.json", "*.pth", "*.safetensors",
                                                                     "*.bin", "*.pt", "*.ckpt"]))
        except Exception as exc:
            raise WeightsError(f"{src}: cannot fetch from the Hugging Face hub ({exc})") from exc
    raise WeightsError(f"{src}: no such folder (and not a hub id)")


class OfficialLayout:
    """Where the weights and configs of one release folder are."""

    def __init__(self, root: Path):
        self.root = root
        self.weights = root / "weights" if (root / "weights").is_dir() else root
        self.configs = root / "configs" if (root / "configs").is_dir() else None

    def weight_file(self, name: str, required: bool = True) -> Path | None:
        found = _find(self.weights, name)
        if found is None and required:
            raise WeightsError(f"{self.root}: no {name} weights ({name}{{{','.join(WEIGHT_SUFFIXES)}}})")
        return found

    def config(self, name: str) -> dict[str, Any] | None:
        if self.configs is None or not (self.configs / f"{name}.json").is_file():
            return None
        path = self.configs / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON ({exc})") from exc


def _reference_unet(layout: OfficialLayout) -> ReferenceUNet2D:
    entry = layout.config("reference_unet")
    config = oc.model_kwargs(entry) if entry else dict(oc.RELEASE_UNET_2D)
    kwargs = oc.reference_unet_config(config, "reference_unet config")
    path = layout.weight_file("reference_unet")
    return build_and_load(lambda: ReferenceUNet2D(**kwargs), official_to_ours(read_state_dict(path)), str(path),
                          ignorable=lambda k: bool(_REFERENCE_UNUSED.match(k)))


def _denoising_unet(layout: OfficialLayout) -> DenoisingUNet3D:
    entry = layout.config("denoising_unet")
    if entry:
        config = oc.model_kwargs(entry)
    else:
        config = {**oc.RELEASE_UNET_2D, **oc.RELEASE_MOTION, "in_channels": 9}
    kwargs = oc.denoising_unet_config(config, "denoising_unet config")
    path = layout.weight_file("denoising_unet")
    state = official_to_ours(read_state_dict(path))
    motion = layout.weight_file("motion_module", required=False)
    if motion is not None:  # Moore-AnimateAnyone ships the motion module separately
        extra = official_to_ours(read_state_dict(motion))
        clash = sorted(set(extra) & set(state))
        if clash:
            raise WeightsError(f"{motion}: keys also present in {path.name}: {short_keys(clash)}")
        state.update(extra)
    return build_and_load(lambda: DenoisingUNet3D(**kwargs), state, str(path), optional=lambda k: bool(_PE.search(k)))


def _pose_guider(layout: OfficialLayout) -> PoseGuider:
    entry = layout.config("pose_guider")
    config = oc.model_kwargs(entry) if entry else dict(oc.RELEASE_POSE_GUIDER)
    kwargs = oc.pose_guider_config(config)
    path = layout.weight_file("pose_guider")
    return build_and_load(lambda: PoseGuider(**kwargs), official_to_ours(read_state_dict(path)), str(path))


def _fixture_vae(layout: OfficialLayout):
    from diffusers import AutoencoderKL

    entry, path = layout.config("vae"), layout.weight_file("vae", required=False)
    if entry is None or path is None:
        return None
    kwargs = dict(entry.get("constructor_kwargs") or oc.model_kwargs(entry))
    return build_and_load(lambda: AutoencoderKL(**kwargs), read_state_dict(path), str(path))


def _fixture_image_encoder(layout: OfficialLayout):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    entry, path = layout.config("image_encoder"), layout.weight_file("image_encoder", required=False)
    if entry is None or path is None:
        return None
    kwargs = (entry.get("constructor_kwargs") or {}).get("config") or entry.get("resolved_config")
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**kwargs))
    # position_ids is a non-checkpoint buffer in some transformers versions
    load_checked(model, read_state_dict(path), str(path), optional=lambda k: k.endswith("position_ids"),
                 ignorable=lambda k: k.endswith("position_ids"))
    return model


def _vae_from(path: str | Path):
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(str(path))
    except Exception as exc:
        raise WeightsError(f"vae {path}: cannot load a diffusers AutoencoderKL ({exc})") from exc


def _image_encoder_from(path: str | Path):
    from transformers import CLIPVisionModelWithProjection

    try:
        return CLIPVisionModelWithProjection.from_pretrained(str(path))
    except Exception as exc:
        raise WeightsError(f"image_encoder {path}: cannot load a CLIPVisionModelWithProjection ({exc})") from exc


def load_official_components(src: str | Path, *, vae: str | Path | None = None,
                             image_encoder: str | Path | None = None, torch_dtype: torch.dtype | None = None
                             ) -> dict[str, nn.Module]:
    """{"reference_unet", "denoising_unet", "pose_guider"} plus "vae"/"image_encoder" when found
    (explicit paths win over fixture files). Models are returned in eval mode."""
    layout = OfficialLayout(_resolve(src))
    components: dict[str, nn.Module] = {
        "reference_unet": _reference_unet(layout),
        "denoising_unet": _denoising_unet(layout),
        "pose_guider": _pose_guider(layout),
    }
    found_vae = _vae_from(vae) if vae is not None else _fixture_vae(layout)
    found_encoder = _image_encoder_from(image_encoder) if image_encoder is not None else _fixture_image_encoder(layout)
    if found_vae is not None:
        components["vae"] = found_vae
    if found_encoder is not None:
        components["image_encoder"] = found_encoder
    for model in components.values():
        model.eval()
        if torch_dtype is not None:
            model.to(dtype=torch_dtype)
    return components


def load_official_encoders(src: str | Path) -> dict[str, nn.Module]:
    """The "vae" and "image_encoder" an official-layout folder (or hub id) holds, without its UNets."""
    layout = OfficialLayout(_resolve(src))
    found = {"vae": _fixture_vae(layout), "image_encoder": _fixture_image_encoder(layout)}
    return {name: model.eval() for name, model in found.items() if model is not None}
