"""Per-clip annotation files: the contract between the clip stages, the manifest and the latent cache.

Files in a clip's ``work_dir`` (all optional; ``ClipTask.annotations`` maps a name to the file name
relative to ``work_dir``). Coordinates are in *processing-size* pixels (``ClipTask.width/height``):

=================  ===================================================================================
name -> file       content
=================  ===================================================================================
boxes              ``boxes.npy`` (T, 4) float32 xyxy of the main character; NaN rows where missing
person_counts      ``person_counts.npy`` (T,) int16 people detected per frame (main included)
keypoints          ``keypoints.npy`` (T, K, 3) float32 (x, y, score); layout in stats["keypoint_layout"]
                   (``openpose18``: OpenPose body order; ``dwpose134``: 18 OpenPose body, 6 feet,
                   68 face, 21 left hand, 21 right hand); undetected points have score 0
detect_keypoints   ``detect_keypoints.npy`` (T, 17, 3) float32 COCO-17 (x, y, score) of the main character
                   as the detector (a pose model) saw it; all zero where no detection matched its box.
                   Written by detect+track with a pose model; the pose stage maps it to ``keypoints``
                   instead of running the same model again (``pose.reuses_detect``)
masks              ``masks.npz`` with ``bits`` (packed uint8, np.packbits of the flattened bool
                   (T, H, W) array) and ``shape`` (int64 [T, H, W]); fine mask of the main character
preview            ``preview.png`` RGB strip (frames with mask + pose drawn)
=================  ===================================================================================

Every file is written to a temporary name and renamed, so a crash never leaves a half file under
a final name. Arrays are ``.npy``/``.npz`` without pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anycharv.atomic import atomic_open

FILES = {
    "boxes": "boxes.npy",
    "person_counts": "person_counts.npy",
    "keypoints": "keypoints.npy",
    "detect_keypoints": "detect_keypoints.npy",
    "masks": "masks.npz",
    "preview": "preview.png",
}


def _atomic(path: Path, write) -> None:
    with atomic_open(path) as f:
        write(f)


def save_array(clip_dir: str | Path, name: str, array: np.ndarray) -> str:
    """Write ``array`` as ``FILES[name]`` (.npy) under ``clip_dir``; returns the relative file name."""
    rel = FILES[name]
    _atomic(Path(clip_dir) / rel, lambda f: np.save(f, np.asarray(array), allow_pickle=False))
    return rel


def pack_masks(masks: np.ndarray) -> dict[str, np.ndarray]:
    masks = np.asarray(masks, dtype=bool)
    return {"bits": np.packbits(masks.reshape(-1)), "shape": np.asarray(masks.shape, np.int64)}


def unpack_masks(bits: np.ndarray, shape) -> np.ndarray:
    shape = tuple(int(v) for v in shape)
    count = int(np.prod(shape))
    return np.unpackbits(np.asarray(bits, np.uint8), count=count).astype(bool).reshape(shape)


def save_masks(clip_dir: str | Path, masks: np.ndarray) -> str:
    rel = FILES["masks"]
    packed = pack_masks(masks)
    _atomic(Path(clip_dir) / rel, lambda f: np.savez_compressed(f, **packed))
    return rel


def load_masks(path: str | Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return unpack_masks(data["bits"], data["shape"])


def save_png(clip_dir: str | Path, name: str, image: np.ndarray) -> str:
    from PIL import Image

    rel = FILES[name]
    _atomic(Path(clip_dir) / rel, lambda f: Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG"))
    return rel


def load_clip_annotations(clip_dir: str | Path, annotations: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Read back every annotation present in ``clip_dir`` (or those named in ``annotations``):
    arrays for boxes/person_counts/keypoints/detect_keypoints/masks, an RGB array for the preview."""
    clip_dir = Path(clip_dir)
    names = annotations or {k: v for k, v in FILES.items() if (clip_dir / v).is_file()}
    out: dict[str, np.ndarray] = {}
    for name, rel in names.items():
        path = clip_dir / rel
        if rel.endswith(".npz"):
            out[name] = load_masks(path)
        elif rel.endswith(".npy"):
            out[name] = np.load(path, allow_pickle=False)
        elif rel.endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                out[name] = np.asarray(im.convert("RGB"))
    return out
