"""The metrics that need a network: LPIPS, CLIP-I, DINO-I (per clip) and FID, FVD (over all clips),
each computed only when its weights are given as local files (``EvalConfig.*_weights``). Nothing
here downloads: transformers folders are opened with ``local_files_only=True``, torchvision
networks are built with ``weights=None`` and filled from the given file (``torch.load(...,
weights_only=True)``), the I3D is a TorchScript file.

- **CLIP-I**: cosine similarity of the projected CLIP image embeddings (``image_embeds`` of a
  ``CLIPVisionModelWithProjection`` folder) of the clip's reference character and of each generated
  frame, averaged over frames. **DINO-I**: the same with the CLS token (``last_hidden_state[:, 0]``)
  of a ``Dinov2Model`` / ``ViTModel`` folder (e.g. facebook/dinov2-base, facebook/dino-vits16). The
  reference is the cached reference frame (background zeroed) cropped to its box, each generated
  frame is cropped to its (padded) box: both show the character. Crops are padded to a square with
  black (the reference's background) and resized (bicubic) to the model's input size, normalised
  with the folder's ``preprocessor_config.json`` mean/std (CLIP's or ImageNet's without one).
- **LPIPS**: ``anycharv.evaluation.lpips`` (generated frame against target frame, whole frame).
- **FID**: Fréchet distance between Gaussians fitted to the 2048-d pool features of torchvision's
  ``inception_v3`` on every scored generated frame and every target frame (frames resized to
  299x299, bilinear; inputs in [-1, 1], i.e. torchvision's ImageNet normalisation followed by its
  ``transform_input``); unbiased covariances (N - 1), as pytorch-fid. **Which weights**: this is the
  torchvision architecture with a torchvision ``inception_v3`` state dict (e.g. ``inception_v3_google-
  0cc3c7bd.pth``). Published FID numbers use the TF-Inception graph (pytorch-fid's
  ``pt_inception-2015-12-05-6726825d.pth``, whose blocks and weights differ from torchvision's), so
  numbers made here are comparable only with numbers made with the same weights file, never with
  papers.
- **FVD** (the StyleGAN-V variant): features of StyleGAN-V's TorchScript I3D (``i3d_torchscript.pt``,
  the Kinetics-400 I3D of the original TF FVD) on the first ``eval.fvd_frames`` (16) frames of every
  clip that has that many, called as StyleGAN-V calls it (``src/metrics/frechet_video_distance.py``:
  ``detector_kwargs = dict(rescale=True, resize=True, return_features=True)``; ``metric_utils.py``
  hands it uint8 videos in [0, 255] laid out ``[batch, c, t, h, w]``), so the detector rescales to
  [-1, 1] and resizes to 224 itself; biased covariances (N), as its ``FeatureStats.get_mean_cov``.
  Clips shorter than ``fvd_frames`` are left out of it, as StyleGAN-V discards short videos.

FID and FVD over a few dozen clips are statistically meaningless (the covariances of 2048- and
400-d features need thousands of samples): the summary records the sample count next to each and
warns; compare such numbers only between models scored on the same clips.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anycharv.errors import InputError
from anycharv.evaluation.config import METRICS, OPTIONAL_METRICS, EvalConfig

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_SIZE = 299
FEATURE_CHUNK = 16
# Below this many samples, the summary warns that FID / FVD say little (the feature widths).
MEANINGFUL_SAMPLES = {"fid": 2048, "fvd": 400}


# ---- which metrics a config enables -------------------------------------------------------------


def check_weight_paths(cfg: EvalConfig) -> None:
    """Every weights path the config gives must exist (InputError naming the field)."""
    for field in ("lpips_weights", "lpips_backbone", "clip_weights", "dino_weights", "fid_weights", "fvd_weights"):
        value = getattr(cfg, field)
        if value and not Path(value).expanduser().exists():
            raise InputError(f"eval.{field} {value}", "no such file or folder (metric weights are never downloaded: "
                             "give a local path)", code="no_weights")
    for field in ("clip_weights", "dino_weights"):
        value = getattr(cfg, field)
        if value and not (Path(value).expanduser() / "config.json").is_file():
            raise InputError(f"eval.{field} {value}", "not a transformers model folder (no config.json)",
                             code="no_weights")
    for field in ("lpips_weights", "lpips_backbone", "fid_weights", "fvd_weights"):
        value = getattr(cfg, field)
        if value and not Path(value).expanduser().is_file():
            raise InputError(f"eval.{field} {value}", "is a folder; give the weights file", code="no_weights")
    if cfg.fvd_weights and cfg.fvd_frames > cfg.num_frames:
        raise InputError("eval.fvd_frames", f"{cfg.fvd_frames} frames per FVD video but eval.num_frames is "
                         f"{cfg.num_frames}: no clip would be long enough", code="bad_option")


def metric_availability(cfg: EvalConfig) -> tuple[list[str], dict[str, str]]:
    """(metrics this config computes, {metric: why it is skipped})."""
    available = [name for name, info in METRICS.items() if info.weights is None]
    skipped: dict[str, str] = {}
    for name in OPTIONAL_METRICS:
        if name == "lpips":
            missing = [f for f in ("lpips_weights", "lpips_backbone") if not getattr(cfg, f)]
            if missing:
                skipped[name] = "no weights given (" + ", ".join(f"eval.{f}" for f in missing) + ")"
                continue
        elif not getattr(cfg, METRICS[name].weights):
            skipped[name] = f"no weights given (eval.{METRICS[name].weights})"
            continue
        available.append(name)
    return available, skipped


# ---- Fréchet distance ---------------------------------------------------------------------------


def gaussian_stats(features: np.ndarray, ddof: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D,D) in float64 of (N,D) features, with ``ddof`` (1: unbiased)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) <= ddof:
        raise ValueError(f"need more than {ddof} feature rows, got shape {x.shape}")
    mu = x.mean(axis=0)
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - ddof)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off
    eigenvalues clipped to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) of two Gaussians.

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are those
    of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2): two symmetric eigen-decompositions, no
    complex round-off (scipy's ``sqrtm`` of the non-symmetric product is what pytorch-fid uses).
    Exact to ~1e-7 of the covariances' scale where they are singular."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root = _psd_sqrt(s1)
    inner = root @ s2 @ root
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    # >= 0 in exact arithmetic; round-off of the square roots of ~0 eigenvalues (singular covariances of
    # fewer samples than dimensions) can take identical distributions a hair below it
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt), 0.0)


def set_distance(name: str, generated: list[np.ndarray], target: list[np.ndarray]) -> tuple[float | None, int]:
    """FID or FVD from per-clip feature arrays: (value or None when there are fewer than 2 samples,
    samples per side)."""
    if not generated:
        return None, 0
    gen, tgt = np.concatenate(generated), np.concatenate(target)
    if len(gen) < 2:
        return None, len(gen)
    ddof = 1 if name == "fid" else 0
    value = frechet_distance(*gaussian_stats(gen, ddof), *gaussian_stats(tgt, ddof))
    return round(value, 6), len(gen)


# ---- the networks ---------------------------------------------------------------------------------


def _load_state(path: str, field: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"eval.{field} {path}", f"not a readable state-dict file ({type(exc).__name__}: {exc})",
                         code="bad_weights") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"eval.{field} {path}", "not a state dict", code="bad_weights")
    return state


def _preprocessing(folder: Path, default_mean, default_std, default_size: int) -> tuple[int, tuple, tuple]:
    """(input size, mean, std) from the folder's ``preprocessor_config.json``, else the defaults."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return default_size, tuple(default_mean), tuple(default_std)
    cfg = json.loads(path.read_text())
    size = cfg.get("crop_size") or cfg.get("size") or default_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or default_size
    return int(size), tuple(cfg.get("image_mean") or default_mean), tuple(cfg.get("image_std") or default_std)


def square_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3,h,w) in [0,1] -> (3,size,size): padded to a square with black (centred), resized bicubic."""
    _, h, w = image.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    padded = F.pad(image, (left, side - w - left, top, side - h - top))
    out = F.interpolate(padded[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return out[0].clamp(0, 1)


class ImageEmbedder:
    """CLIP (projected image embedding) or DINO (CLS token) embeddings of character crops, unit norm."""

    def __init__(self, kind: str, folder: str, device: torch.device):
        field = f"eval.{kind}_weights"
        root = Path(folder).expanduser()
        try:
            if kind == "clip":
                from transformers import CLIPVisionModelWithProjection

                model = CLIPVisionModelWithProjection.from_pretrained(str(root), local_files_only=True)
                mean, std = CLIP_MEAN, CLIP_STD
            else:
                from transformers import AutoModel

                model = AutoModel.from_pretrained(str(root), local_files_only=True)
                mean, std = IMAGENET_MEAN, IMAGENET_STD
        except Exception as exc:
            raise InputError(f"{field} {folder}", f"cannot load it ({type(exc).__name__}: {exc})",
                             code="bad_weights") from exc
        self.kind, self.model = kind, model.eval().to(device)
        image_size = getattr(model.config, "image_size", 224)
        self.size, mean, std = _preprocessing(root, mean, std, int(image_size))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.device = device

    @torch.no_grad()
    def __call__(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """(3,h,w) crops in [0,1] -> (N,D) float32 unit-norm embeddings on the CPU."""
        out = []
        for start in range(0, len(crops), FEATURE_CHUNK):
            batch = torch.stack([square_resize(c.float(), self.size) for c in crops[start:start + FEATURE_CHUNK]])
            pixels = ((batch - self.mean) / self.std).to(self.device)
            result = self.model(pixel_values=pixels)
            embeds = result.image_embeds if self.kind == "clip" else result.last_hidden_state[:, 0]
            out.append(F.normalize(embeds.float(), dim=-1).cpu())
        return torch.cat(out)


class InceptionFeatures:
    """torchvision ``inception_v3`` pool features (2048-d) from a state-dict file."""

    def __init__(self, path: str, device: torch.device):
        import torchvision

        model = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                                init_weights=False)
        state = _load_state(path, "fid_weights")
        own = model.state_dict()
        missing = sorted(k for k in own if k not in state and not k.startswith(("fc.", "AuxLogits.")))
        unexpected = sorted(k for k in state if k not in own)
        if missing or unexpected:
            what = f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else \
                f"{len(unexpected)} unknown tensors (e.g. {unexpected[0]})"
            raise InputError(f"eval.fid_weights {path}", f"not a torchvision inception_v3 state dict: {what} "
                             "(pytorch-fid's pt_inception file has another layout)", code="bad_weights")
        bad = [k for k in state if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise InputError(f"eval.fid_weights {path}", f"tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                             f"inception_v3 needs {tuple(own[bad[0]].shape)}", code="bad_weights")
        model.load_state_dict({**own, **state})
        model.fc = torch.nn.Identity()
        self.model, self.device = model.eval().to(device), device

    @torch.no_grad()
    def __call__(self, video: torch.Tensor) -> np.ndarray:
        """(3,F,H,W) in [0,1] -> (F,2048) float32."""
        frames = video.permute(1, 0, 2, 3).float()
        out = []
        for start in range(0, len(frames), FEATURE_CHUNK):
            x = F.interpolate(frames[start:start + FEATURE_CHUNK], size=(INCEPTION_SIZE, INCEPTION_SIZE),
                              mode="bilinear", align_corners=False)
            out.append(self.model((x * 2 - 1).to(self.device)).float().cpu())
        return torch.cat(out).numpy()


class I3DFeatures:
    """StyleGAN-V's TorchScript I3D (``i3d_torchscript.pt``), called as StyleGAN-V calls it."""

    def __init__(self, path: str, device: torch.device):
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript; StyleGAN-V's detector is one
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(Path(path).expanduser()), map_location="cpu").eval().to(device)
        except Exception as exc:
            raise InputError(f"eval.fvd_weights {path}", f"not a TorchScript file ({type(exc).__name__}: {exc})",
                             code="bad_weights") from exc
        self.device = device

    @torch.no_grad()
    def __call__(self, video: torch.Tensor) -> np.ndarray:
        """(3,T,H,W) in [0,1] -> (1,D) float32 features of the one video."""
        uint8 = (video.clamp(0, 1) * 255).round().to(torch.uint8)[None]  # [batch, c, t, h, w], as StyleGAN-V
        features = self.model(uint8.to(self.device), rescale=True, resize=True, return_features=True)
        return features.float().cpu().numpy().reshape(1, -1)


def load_metric_networks(cfg: EvalConfig, device: torch.device) -> dict:
    """The networks of the optional metrics this config enables ({metric: network})."""
    available, _ = metric_availability(cfg)
    nets: dict = {}
    if "lpips" in available:
        from anycharv.evaluation.lpips import LPIPS

        nets["lpips"] = LPIPS(cfg.lpips_net, cfg.lpips_backbone, cfg.lpips_weights).to(device)
    if "clip_i" in available:
        nets["clip_i"] = ImageEmbedder("clip", cfg.clip_weights, device)
    if "dino_i" in available:
        nets["dino_i"] = ImageEmbedder("dino", cfg.dino_weights, device)
    if "fid" in available:
        nets["fid"] = InceptionFeatures(cfg.fid_weights, device)
    if "fvd" in available:
        nets["fvd"] = I3DFeatures(cfg.fvd_weights, device)
    return nets


def box_crop(image: torch.Tensor, box) -> torch.Tensor:
    """(3,H,W) cropped to the xyxy ``box`` (pixels, rounded outwards as ``anycharv.boxes`` rounds);
    the whole image when the box is empty or not finite."""
    _, height, width = image.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    if not np.all(np.isfinite([x0, y0, x1, y1])):
        return image
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    if c1 <= c0 or r1 <= r0:
        return image
    return image[:, r0:r1, c0:c1]


@torch.no_grad()
def clip_metrics(nets: dict, generated: torch.Tensor, target: torch.Tensor, reference: torch.Tensor,
                 boxes: np.ndarray, reference_box) -> dict[str, float]:
    """Per-clip optional metrics: ``lpips``, ``clip_i``, ``dino_i`` (those ``nets`` has).
    ``generated``/``target`` (3,F,H,W) and ``reference`` (3,H,W) in [0,1]; ``boxes`` (F,4)."""
    out: dict[str, float] = {}
    if "lpips" in nets:
        net = nets["lpips"]
        device = net.shift.device
        x = generated.permute(1, 0, 2, 3).float() * 2 - 1
        y = target.permute(1, 0, 2, 3).float() * 2 - 1
        values = torch.cat([net(x[s:s + FEATURE_CHUNK].to(device), y[s:s + FEATURE_CHUNK].to(device)).cpu()
                            for s in range(0, len(x), FEATURE_CHUNK)])
        out["lpips"] = round(float(values.mean()), 6)
    for name in ("clip_i", "dino_i"):
        if name in nets:
            crops = [box_crop(generated[:, t], boxes[t]) for t in range(generated.shape[1])]
            embeds = nets[name]([box_crop(reference, reference_box), *crops])
            out[name] = round(float((embeds[1:] @ embeds[0]).mean()), 6)
    return out


@torch.no_grad()
def set_features(nets: dict, generated: torch.Tensor, target: torch.Tensor, fvd_frames: int) -> dict[str, np.ndarray]:
    """Features for FID (per frame) and FVD (per clip, when it has ``fvd_frames`` frames) of the
    generated and the target clip: ``{fid_generated, fid_target, fvd_generated, fvd_target}``."""
    out: dict[str, np.ndarray] = {}
    if "fid" in nets:
        out["fid_generated"], out["fid_target"] = nets["fid"](generated), nets["fid"](target)
    if "fvd" in nets and generated.shape[1] >= fvd_frames:
        out["fvd_generated"] = nets["fvd"](generated[:, :fvd_frames])
        out["fvd_target"] = nets["fvd"](target[:, :fvd_frames])
    return out
