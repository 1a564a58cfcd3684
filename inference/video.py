"""Per-video inference as plain Python (no Prefect, no Ray): prepare the target video, place the
reference character, run the pipeline, paste the generated person back. ``anycharv infer`` and the
batch flows call ``infer_video``; it returns the composited frames before encoding, so callers (and
tests) can check them without codec loss."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class InferenceResult:
    """What one inference produced, before encoding."""

    video: Any  # (F,H,W,3) uint8: composited at source size, or the generated frames with paste_back=False
    generated: Any  # (F,h,w,3) uint8 at the model size
    target: Any  # anycharv.inference.target_prep.TargetInputs
    reference: Any  # anycharv.model.reference_prep.ReferenceInputs
    fps: float
    feather_px: float | None
    timings: dict[str, float] = field(default_factory=dict)


def isnet_segmenter(cfg=None) -> Callable:
    """The preprocessing's ISNet foreground model as a reference segmenter (RGB -> soft mask in [0,1])."""
    from anycharv.preprocessing.config import MaskConfig
    from anycharv.preprocessing.fine_mask import IsnetMasker

    masker = IsnetMasker(cfg or MaskConfig())
    return masker.probability


def infer_video(pipe, ref, video: str | None = None, *, target=None, cfg=None, person: int | None = None,
                size: int | tuple[int, int] = 576, max_frames: int | None = None, start: int = 0, steps: int = 30,
                guidance: float = 3.0, seed: int = 0, paste_back: bool = True, feather_px: float | None = None,
                box_pad: float = 0.1, segment: Callable | None = None, ref_background: str | tuple | None = None,
                context_frames: int = 24, context_overlap: int = 6, context_batch_size: int = 1,
                log: Callable[[str], None] | None = None) -> InferenceResult:
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
    from anycharv.inference.target_prep import prepare_target
    from anycharv.model.compositing import composite
    from anycharv.model.reference_prep import prepare_reference

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
               context_frames=context_frames, context_overlap=context_overlap,
               context_batch_size=context_batch_size, output_type="uint8")
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
