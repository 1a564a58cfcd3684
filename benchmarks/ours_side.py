"""Our side of ``benchmarks/vs_official.py``: one generation with ``AnyCharVPipeline(parity=True)`` in this
(fresh) process, in our virtual environment.

    .venv/bin/python benchmarks/ours_side.py --weights FOLDER --inputs inputs.safetensors \\
        --out result.safetensors --steps 20 [--call-kwargs '{"decode_chunk_size": 4}']

The same weights folder as the official side (``load_official_components(FOLDER)``), the scheduler of
``FOLDER/configs/scheduler.json``, the same PIL inputs, ``generator=torch.manual_seed(seed)`` (the
official script seeds the global generator that way), guidance, steps, ``context_frames`` /
``context_overlap`` (stride 1), ``output_type="uint8"`` (parity mode truncates, as the official script).
``--call-kwargs`` (a JSON object) adds keyword arguments to the call, for speed options; ones the
pipeline does not know, or that would break parity, are refused by it.

The final latents are captured by a ``callback_on_step_end`` that keeps the latents of the last step
(what the pipeline decodes). Timings: ``import_s`` (from the first line of this file until the pipeline
and loader are imported), ``load_s`` (weights loaded, pipeline assembled), ``call_s`` (perf_counter around
the pipeline call alone, uint8 conversion included; no warm-up: each process is fresh). The result goes to
``--out`` (``final_latents`` float32 (1,4,F,h,w), ``video_uint8`` (F,H,W,3)), one JSON line to stdout.
``--check-only`` stops after loading and reports parameter counts. ``--solver dpmpp|unipc`` swaps DDIM for
that solver (``make_solver``) and runs with every parity option given explicitly: the official quirks stay,
only the sampler (and ``--steps``) differ.
"""

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from diffusers import DDIMScheduler  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from anycharv.allocator import keep_freed_memory  # noqa: E402
from anycharv.model.official import load_official_components  # noqa: E402
from anycharv.model.pipeline import PARITY_OPTIONS, AnyCharVPipeline  # noqa: E402
from anycharv.model.scheduling import SOLVERS, make_solver  # noqa: E402

IMPORT_S = time.perf_counter() - T_START


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="folder with configs/*.json and weights/*.safetensors")
    parser.add_argument("--inputs", help="inputs safetensors (ref_image, tgt_frames, pose_frames, tgt_masks)")
    parser.add_argument("--out", help="result safetensors")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--context-frames", type=int, default=24)
    parser.add_argument("--context-overlap", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42, help="torch.manual_seed, as the official script")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--call-kwargs", default="{}", help="JSON object of extra pipeline call kwargs")
    parser.add_argument("--solver", choices=SOLVERS, default="ddim", help="ddim: parity mode (default)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is (default: keep_freed_memory(), as the CLI)")
    parser.add_argument("--check-only", action="store_true", help="load the weights, report, stop")
    return parser.parse_args(argv)


def load_pipeline(folder: Path) -> AnyCharVPipeline:
    components = load_official_components(folder)
    config = json.loads((folder / "configs" / "scheduler.json").read_text())
    pipe = AnyCharVPipeline.from_components(components, scheduler=DDIMScheduler(**config["constructor_kwargs"]),
                                            parity=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record_first_call(module: torch.nn.Module) -> dict:
    """``{"s": seconds from this script's first line to the module's first forward}`` once it ran."""
    seen = {"s": None}

    def hook(*_):
        seen["s"] = round(time.perf_counter() - T_START, 3)
        handle.remove()

    handle = module.register_forward_pre_hook(hook)
    return seen


def pil_inputs(path: str):
    data = load_file(path)
    ref = PIL.Image.fromarray(data["ref_image"].numpy(), mode="RGB")
    targets = [PIL.Image.fromarray(f, mode="RGB") for f in data["tgt_frames"].numpy()]
    poses = [PIL.Image.fromarray(f, mode="RGB") for f in data["pose_frames"].numpy()]
    masks = [PIL.Image.fromarray(m, mode="L") for m in data["tgt_masks"].numpy()]
    return ref, targets, poses, masks


def main(argv=None) -> int:
    args = parse_args(argv)
    extra = json.loads(args.call_kwargs)
    if not isinstance(extra, dict):
        raise SystemExit("--call-kwargs must be a JSON object")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.default_allocator:
        keep_freed_memory()  # what `anycharv infer` and the batch workers do
    t0 = time.perf_counter()
    pipe = load_pipeline(Path(args.weights))
    load_s = time.perf_counter() - t0
    models = {name: getattr(pipe, name) for name in
              ("vae", "reference_unet", "denoising_unet", "pose_guider", "image_encoder")}
    report = {
        "side": "ours", "import_s": round(IMPORT_S, 3), "load_s": round(load_s, 3),
        "torch_threads": torch.get_num_threads(), "call_kwargs": extra,
        "params_million": {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 3)
                           for name, m in models.items()},
    }
    if args.check_only:
        print(json.dumps(report), flush=True)
        return 0

    ref, targets, poses, masks = pil_inputs(args.inputs)
    width, height = ref.size
    captured = {}
    first_step = record_first_call(pipe.denoising_unet)

    def keep_latents(_pipe, _step, _t, tensors):
        captured["final_latents"] = tensors["latents"]
        return {}

    if args.solver != "ddim":
        pipe.scheduler = make_solver(args.solver)
        extra = {**dataclasses.asdict(PARITY_OPTIONS), **extra, "parity": False}
    report["solver"] = args.solver
    generator = torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    out = pipe(reference_image=ref, target_frames=targets, pose_frames=poses, masks=masks, height=height,
               width=width, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generator,
               context_frames=args.context_frames, context_overlap=args.context_overlap, context_stride=1,
               output_type="uint8", callback_on_step_end=keep_latents, **extra)
    call_s = time.perf_counter() - t0

    save_file({"final_latents": captured["final_latents"].float().contiguous(),
               "video_uint8": torch.from_numpy(np.ascontiguousarray(out.frames[0]))}, args.out)
    report.update(call_s=round(call_s, 3), first_step_s=first_step["s"], frames=len(targets), height=height,
                  width=width, steps=args.steps,
                  guidance=args.guidance, context_frames=args.context_frames,
                  context_overlap=args.context_overlap, seed=args.seed, pid=os.getpid())
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
