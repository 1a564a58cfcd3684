"""`anycharv infer`: put a reference character into a video in place of one tracked person.

Steps: prepare the target video (track people, box masks, pose renders at the model size), cut the
character out of the reference photo and place it on the model canvas, run the pipeline, paste the
generated person back into the source frames (only its box changes), write an mp4 at the source fps.

``infer_video`` is the Python API behind the command; it returns the composited frames before
encoding, so callers (and tests) can check them without codec loss.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

RANDOM_WEIGHTS_WARNING = (
    "WARNING: --preset tiny uses RANDOM tiny weights: the output video is meaningless noise where the "
    "person was; it only shows that the whole path runs. Use --weights for real results."
)
DEFAULT_SIZE = {"weights": 576, "tiny": 128}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "infer", help="replace a person in a video with a reference character",
        description="Replace one tracked person of --video with the character of --ref and write an mp4 at "
                    "the source frame rate. Only the person's box region changes (paste-back).")
    p.add_argument("--ref", required=True, metavar="IMAGE", help="reference character image")
    p.add_argument("--video", required=True, metavar="VIDEO", help="target video")
    p.add_argument("--out", metavar="OUT.mp4", help="output video (required unless --list-people)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="DIR_OR_HUB_ID",
                     help="our converted component folders (anycharv convert-official), or an official "
                          "AnyCharV release folder / hub id")
    src.add_argument("--preset", choices=["tiny"], help="tiny: random tiny weights (runs anywhere, meaningless)")
    p.add_argument("--vae", metavar="PATH", help="diffusers AutoencoderKL folder (official releases lack one)")
    p.add_argument("--image-encoder", metavar="PATH", help="CLIPVisionModelWithProjection folder (ditto)")
    p.add_argument("--person", type=int, metavar="ID", help="track id of the person to replace (default: main)")
    p.add_argument("--list-people", action="store_true", help="print the tracked people and exit")
    p.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3.0)")
    p.add_argument("--max-frames", type=int, metavar="N", help="use at most N frames (from --start)")
    p.add_argument("--start", type=int, default=0, metavar="FRAME", help="first frame of the target video (default 0)")
    p.add_argument("--size", type=int, metavar="SHORT_SIDE",
                   help=f"model short side, a multiple of 8 (default {DEFAULT_SIZE['weights']}, "
                        f"{DEFAULT_SIZE['tiny']} with --preset tiny)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda:N, mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="network dtype (auto: fp32 on CPU, bf16/fp16 on GPU)")
    p.add_argument("--no-paste-back", action="store_true",
                   help="write the raw generated frames at the model size instead of compositing")
    p.add_argument("--feather", type=float, metavar="PX", help="paste-back feather in source pixels "
                   "(default: 2%% of the source short side)")
    p.add_argument("--box-pad", type=float, default=0.1, help="box enlargement per side, share of the box (default 0.1)")
    p.add_argument("--ref-background", default="black", help="reference canvas colour: black (default), white, gray or R,G,B")
    p.add_argument("--no-ref-segment", action="store_true", help="place the whole reference photo (no isnet cut-out)")
    p.add_argument("--context-frames", type=int, default=24, help="frames per temporal window (default 24)")
    p.add_argument("--context-overlap", type=int, default=6, help="overlap of consecutive windows (default 6)")
    p.add_argument("--parity", action="store_true", help="reproduce the official implementation's quirks exactly")
    p.add_argument("--config", metavar="YAML", help="preprocess config YAML (detector, tracker, pose backend, isnet)")
    p.add_argument("--save-inputs", metavar="DIR", help="also write the model inputs (ref, masks, poses) as mp4/png")
    p.set_defaults(func=run)


@dataclass
class InferenceResult:
    """What one inference produced, before encoding."""

    video: Any  # (F,H,W,3) uint8: composited at source size, or the generated frames with paste_back=False
    generated: Any  # (F,h,w,3) uint8 at the model size
    target: Any  # anycharv.preprocessing.target_prep.TargetInputs
    reference: Any  # anycharv.model.reference_prep.ReferenceInputs
    fps: float
    feather_px: float | None
    timings: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ loading
def _looks_like_component_folders(root: Path) -> bool:
    return all((root / name / "config.json").is_file() for name in ("reference_unet", "denoising_unet", "pose_guider"))


def load_components(weights: str | None = None, *, preset: str | None = None, vae: str | None = None,
                    image_encoder: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Networks for the pipeline: random tiny ones (``preset="tiny"``), our diffusers component
    folders (``reference_unet/``, ``denoising_unet/``, ``pose_guider/`` [+ ``vae/``, ``image_encoder/``]),
    or an official release folder / hub id. Explicit ``vae``/``image_encoder`` paths win."""
    from anycharv.errors import InputError, WeightsError

    if preset == "tiny":
        from anycharv.model.tiny import build_tiny_components

        return build_tiny_components(seed=seed)
    if preset is not None:
        raise InputError("preset", f"unknown preset {preset!r} (available: tiny)")
    if not weights:
        raise InputError("weights", "give --weights DIR_OR_HUB_ID or --preset tiny")
    root = Path(weights).expanduser()
    if root.is_dir() and _looks_like_component_folders(root):
        components = _load_component_folders(root, vae, image_encoder)
    else:
        from anycharv.model.official import load_official_components

        components = load_official_components(weights, vae=vae, image_encoder=image_encoder)
    missing = [name for name in ("vae", "image_encoder") if name not in components]
    if missing:
        flags = " and ".join(f"--{m.replace('_', '-')}" for m in missing)
        raise WeightsError(f"{weights}: no {', '.join(missing)} found; pass {flags} (e.g. sd-vae-ft-mse and "
                           "sd-image-variations-diffusers/image_encoder folders)")
    return components


def _load_component_folders(root: Path, vae: str | None, image_encoder: str | None) -> dict[str, Any]:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    from anycharv.errors import WeightsError
    from anycharv.model.denoising_unet import DenoisingUNet3D
    from anycharv.model.pose_guider import PoseGuider
    from anycharv.model.reference_unet import ReferenceUNet2D

    loaders = {"reference_unet": ReferenceUNet2D, "denoising_unet": DenoisingUNet3D, "pose_guider": PoseGuider,
               "vae": AutoencoderKL, "image_encoder": CLIPVisionModelWithProjection}
    paths = {name: root / name for name in loaders}
    if vae:
        paths["vae"] = Path(vae)
    if image_encoder:
        paths["image_encoder"] = Path(image_encoder)
    components = {}
    for name, cls in loaders.items():
        path = paths[name]
        if name in ("vae", "image_encoder") and not (path / "config.json").is_file():
            continue
        try:
            components[name] = cls.from_pretrained(str(path)).eval()
        except Exception as exc:
            raise WeightsError(f"{path}: cannot load {cls.__name__} ({exc})") from exc
    return components


def build_pipeline(components: dict[str, Any], *, device=None, dtype=None, parity: bool = False):
    """An ``AnyCharVPipeline`` on ``device`` with the networks in ``dtype`` (latents stay float32)."""
    import torch

    from anycharv.model.pipeline import AnyCharVPipeline

    for module in components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        current = next(module.parameters()).dtype
        # ModelMixin.to(dtype=...) logs a warning even when nothing changes: only cast when needed.
        module.to(device=device, dtype=dtype if dtype is not None and dtype != current else None)
    return AnyCharVPipeline.from_components(components, parity=parity)


def isnet_segmenter(cfg=None) -> Callable:
    """The preprocessing's ISNet foreground model as a reference segmenter (RGB -> soft mask in [0,1])."""
    from anycharv.preprocessing.config import MaskConfig
    from anycharv.preprocessing.fine_mask import IsnetMasker

    masker = IsnetMasker(cfg or MaskConfig())
    return masker.probability


# ------------------------------------------------------------------------------------------ API
def infer_video(pipe, ref, video: str | None = None, *, target=None, cfg=None, person: int | None = None,
                size: int | tuple[int, int] = 576, max_frames: int | None = None, start: int = 0, steps: int = 30,
                guidance: float = 3.0, seed: int = 0, paste_back: bool = True, feather_px: float | None = None,
                box_pad: float = 0.1, segment: Callable | None = None, ref_background: str | tuple | None = None,
                context_frames: int = 24, context_overlap: int = 6, log: Callable[[str], None] | None = None
                ) -> InferenceResult:
    """Run the whole inference on ``video`` with reference ``ref`` (path or RGB uint8 array).

    ``target`` (a ``TargetInputs`` from ``prepare_target``) may be given instead of ``video``; then
    ``cfg``/``person``/``size``/``max_frames``/``start``/``box_pad`` are not used. Returns an
    ``InferenceResult`` whose ``video`` is the composited uint8 video at the source size (or the
    generated frames at the model size when ``paste_back`` is False). Raises InputError for
    unusable inputs (naming the input).
    """
    import numpy as np
    import torch

    from anycharv.errors import InputError
    from anycharv.model.compositing import composite
    from anycharv.model.reference_prep import prepare_reference
    from anycharv.preprocessing.target_prep import prepare_target

    say = log or (lambda message: None)
    timings: dict[str, float] = {}
    if target is None:
        if video is None:
            raise InputError("video", "give a video path or a prepared target")
        t0 = time.perf_counter()
        target = prepare_target(video, cfg, person, size, max_frames, start=start, box_pad=box_pad)
        timings["prepare_target_s"] = time.perf_counter() - t0
    width, height = target.model_size
    say(f"target: {len(target.frames)} frames {target.source_size[0]}x{target.source_size[1]} @ {target.fps:g} fps; "
        f"people {target.track_ids}, replacing {target.track_id}; model size {width}x{height}")

    t0 = time.perf_counter()
    reference = prepare_reference(ref, width, height, segment=segment, background=ref_background)
    timings["prepare_reference_s"] = time.perf_counter() - t0

    counts = {"frames": len(target.frames), "masks": len(target.masks), "poses": len(target.poses),
              "boxes": len(target.boxes)}
    if len(set(counts.values())) != 1:
        raise InputError("target video", f"frame counts disagree: {counts}", code="frame_count_mismatch")

    t0 = time.perf_counter()
    device = pipe._execution_device
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    out = pipe(reference.image, target.frames, target.poses, target.masks, height=height, width=width,
               num_inference_steps=steps, guidance_scale=guidance, generator=generator,
               context_frames=context_frames, context_overlap=context_overlap, output_type="uint8")
    generated = np.asarray(out.frames[0])
    timings["pipeline_s"] = time.perf_counter() - t0
    timings["device"] = str(device)
    if len(generated) != len(target.frames):
        raise InputError("pipeline output", f"{len(generated)} frames for {len(target.frames)} input frames",
                         code="frame_count_mismatch")

    feather = None
    if paste_back:
        t0 = time.perf_counter()
        feather = max(2.0, 0.02 * min(target.source_size)) if feather_px is None else float(feather_px)
        video_out = composite(target.source_frames, generated, target.boxes, feather_px=feather)
        timings["composite_s"] = time.perf_counter() - t0
    else:
        video_out = generated
    return InferenceResult(video_out, generated, target, reference, target.fps, feather, timings)


def save_inputs(result: InferenceResult, folder: str | Path) -> None:
    """The model's inputs for inspection: reference canvas png, masks and pose renders as mp4."""
    import numpy as np
    from PIL import Image

    from anycharv.model.video_writer import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result.reference.image).save(folder / "reference.png")
    write_video(folder / "masks.mp4", np.repeat(result.target.masks[..., None], 3, axis=3), result.fps)
    write_video(folder / "poses.mp4", result.target.poses, result.fps)
    write_video(folder / "frames.mp4", result.target.frames, result.fps)


# ------------------------------------------------------------------------------------------ CLI
def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _list_people(args, cfg) -> int:
    from anycharv.preprocessing.detect_track import PersonTracker, choose_main_track
    from anycharv.preprocessing.target_prep import read_target_frames, track_people

    frames, _ = read_target_frames(args.video, args.start, args.max_frames)
    tracks = track_people(frames, PersonTracker(cfg.detect))
    if not tracks:
        print(f"{args.video}: no person found")
        return 0
    main = choose_main_track(tracks, cfg.detect.main_person)
    print(f"{args.video}: {len(tracks)} tracked people in frames [{args.start}, {args.start + len(frames)})")
    for tid in sorted(tracks):
        boxes = list(tracks[tid].values())
        h = sum(float(b[3] - b[1]) for b in boxes) / len(boxes)
        print(f"  person {tid}: {len(boxes)} frames, mean box height {h:.0f} px{'  (default)' if tid == main else ''}")
    return 0


def run(args) -> int:
    from anycharv.errors import InputError
    from anycharv.preprocessing.config import PreprocessConfig

    if args.config:
        from anycharv.config import load_config

        cfg = load_config(PreprocessConfig, args.config)
    else:
        cfg = PreprocessConfig()
    if args.device and args.device != "auto":
        cfg = cfg.model_copy(update={
            "detect": cfg.detect.model_copy(update={"device": args.device}),
            "pose": cfg.pose.model_copy(update={"device": args.device}),
            "mask": cfg.mask.model_copy(update={"device": args.device}),
        })
    for name in ("ref", "video"):
        if not Path(getattr(args, name)).is_file():
            raise InputError(f"--{name} {getattr(args, name)}", "file not found", code="not_found")
    if args.list_people:
        return _list_people(args, cfg)
    if not args.out:
        raise InputError("--out", "required (the output .mp4)")
    if Path(args.out).suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise InputError(f"--out {args.out}", "must end in .mp4")
    if args.steps < 1:
        raise InputError("--steps", f"must be >= 1, got {args.steps}")
    if not args.weights and not args.preset:
        raise InputError("--weights", "give --weights DIR_OR_HUB_ID, or --preset tiny for random tiny weights")

    from anycharv.devices import pick_device, pick_dtype
    from anycharv.model.reference_prep import load_image
    from anycharv.model.video_writer import write_video

    load_image(args.ref, "--ref")  # fail fast on an unreadable reference, before anything heavy
    if args.weights and not Path(args.weights).expanduser().exists() and not _HUB_ID.fullmatch(args.weights):
        raise InputError(f"--weights {args.weights}", "no such folder (and not a hub id owner/name)")
    if args.preset == "tiny":
        _err(RANDOM_WEIGHTS_WARNING)
    size = args.size or DEFAULT_SIZE["tiny" if args.preset == "tiny" else "weights"]

    from anycharv.preprocessing.target_prep import prepare_target

    # The target first: a video without people or a wrong --person fails before the networks load.
    t0 = time.perf_counter()
    target = prepare_target(args.video, cfg, args.person, size, args.max_frames, start=args.start,
                            box_pad=args.box_pad)
    prep_s = time.perf_counter() - t0
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    t0 = time.perf_counter()
    components = load_components(args.weights, preset=args.preset, vae=args.vae, image_encoder=args.image_encoder,
                                 seed=args.seed)
    pipe = build_pipeline(components, device=device, dtype=dtype, parity=args.parity)
    load_s = time.perf_counter() - t0
    segment = None if args.no_ref_segment else isnet_segmenter(cfg.mask)

    result = infer_video(pipe, args.ref, target=target, steps=args.steps, guidance=args.guidance, seed=args.seed,
                         paste_back=not args.no_paste_back, feather_px=args.feather, segment=segment,
                         ref_background=args.ref_background, context_frames=args.context_frames,
                         context_overlap=args.context_overlap, log=_err)
    result.timings["prepare_target_s"] = prep_s
    t0 = time.perf_counter()
    out = write_video(args.out, result.video, result.fps)
    write_s = time.perf_counter() - t0
    if args.save_inputs:
        save_inputs(result, args.save_inputs)
    n = len(result.video)
    t = result.timings
    _err(f"timings: load {load_s:.1f}s, target prep {t['prepare_target_s']:.1f}s, reference "
         f"{t['prepare_reference_s']:.1f}s, pipeline {t['pipeline_s']:.1f}s ({t['pipeline_s'] / n:.2f}s/frame on "
         f"{t['device']}), composite {t.get('composite_s', 0.0):.1f}s, write {write_s:.1f}s")
    print(f"wrote {out} ({n} frames, {result.video.shape[2]}x{result.video.shape[1]}, {result.fps:g} fps, "
          f"person {result.target.track_id})")
    if args.preset == "tiny":
        _err("(random tiny weights: the generated region is meaningless)")
    return 0
