"""The official AnyCharV side of ``benchmarks/vs_official.py``: one generation in this (fresh) process.

Runs INSIDE the official virtual environment (``tools/official_env.sh``), never in ours: it imports only
torch, diffusers, transformers, safetensors, numpy, PIL, the standard library and the official ``src``
package (from ``--official-src``), nothing of anycharv.

    OFFICIAL_VENV/bin/python benchmarks/official_side.py --official-src DIR --weights FOLDER \\
        --inputs inputs.safetensors --out result.safetensors --steps 20

What it does is what ``scripts/pose2vid_anycharv_boost.py`` of the official repository does, on CPU in
float32 (``--weight_dtype fp32 --device cpu``), minus its downloads, preprocessing and mp4 writing:

* the five models are built from ``FOLDER/configs/*.json`` (``class_name`` + ``constructor_kwargs``) and
  loaded with ``load_state_dict(strict=True)`` from ``FOLDER/weights/*.safetensors``; the scheduler is
  ``DDIMScheduler(**constructor_kwargs)`` of ``configs/scheduler.json`` (the script's settings);
* ``enable_xformers_memory_efficient_attention()`` is not called (no xformers on CPU): every attention
  runs diffusers' default scaled-dot-product processor;
* the call: ``pipe(ref_pil, target_pils, mask_pils ('L'), pose_pils, W, H, L, steps, cfg,
  generator=torch.manual_seed(seed), context_frames=24, context_stride=1, context_overlap=6,
  context_batch_size=1, interpolation_factor=1)`` (``context_schedule`` stays the default "uniform");
* the uint8 video as the script makes it: ``(x * 255).numpy().astype(np.uint8)``, i.e. truncation.

The final latents are what the pipeline hands to its ``decode_latents`` (captured by wrapping that
method on the instance, before the 1/0.18215 scaling). Timings: ``import_s`` (from the first line of
this file until the official pipeline module is imported; interpreter start-up is not included),
``load_s`` (models built and loaded, pipeline assembled), ``call_s`` (perf_counter around the pipeline
call alone; no warm-up: each process is fresh), ``postprocess_s`` (the script's uint8 conversion).
The result goes to ``--out`` (``final_latents`` float32 (1,4,F,h,w), ``video_uint8`` (F,H,W,3)) and one
JSON line to stdout. ``--check-only`` stops after loading and reports parameter counts.
"""

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-src", required=True, help="clone of github AnyCharV/AnyCharV")
    parser.add_argument("--weights", required=True, help="folder with configs/*.json and weights/*.safetensors")
    parser.add_argument("--inputs", help="inputs safetensors (ref_image, tgt_frames, pose_frames, tgt_masks)")
    parser.add_argument("--out", help="result safetensors")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--context-frames", type=int, default=24)
    parser.add_argument("--context-overlap", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42, help="torch.manual_seed, as the official script")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--check-only", action="store_true", help="load the weights, report, stop")
    return parser.parse_args()


ARGS = parse_args()
warnings.filterwarnings("ignore")  # as the official script does (diffusers 0.28 deprecation notices per call site)
sys.path.insert(0, str(Path(ARGS.official_src).resolve()))

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import PIL.Image  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from src.models.pose_guider import PoseGuider  # noqa: E402
from src.models.unet_2d_condition import UNet2DConditionModel  # noqa: E402
from src.models.unet_3d import UNet3DConditionModel  # noqa: E402
from src.pipelines.pipeline_pose2vid_long_anycharv import Pose2VideoPipeline  # noqa: E402
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402

IMPORT_S = time.perf_counter() - T_START

CLASSES = {
    "src.models.unet_2d_condition.UNet2DConditionModel": UNet2DConditionModel,
    "src.models.unet_3d.UNet3DConditionModel": UNet3DConditionModel,
    "src.models.pose_guider.PoseGuider": PoseGuider,
    "diffusers.AutoencoderKL": AutoencoderKL,
}


def build(folder: Path, name: str):
    """Construct one model from its config entry and load its weights strictly."""
    entry = json.loads((folder / "configs" / f"{name}.json").read_text())
    kwargs = entry["constructor_kwargs"]
    if entry["class_name"] == "transformers.CLIPVisionModelWithProjection":
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**kwargs["config"]))
    else:
        model = CLASSES[entry["class_name"]](**kwargs)
    model.load_state_dict(load_file(str(folder / "weights" / f"{name}.safetensors")), strict=True)
    return model.eval()


def load_pipeline(folder: Path):
    models = {name: build(folder, name) for name in
              ("vae", "reference_unet", "denoising_unet", "pose_guider", "image_encoder")}
    scheduler = DDIMScheduler(**json.loads((folder / "configs" / "scheduler.json").read_text())["constructor_kwargs"])
    pipe = Pose2VideoPipeline(vae=models["vae"], image_encoder=models["image_encoder"],
                              reference_unet=models["reference_unet"], denoising_unet=models["denoising_unet"],
                              pose_guider=models["pose_guider"], scheduler=scheduler)
    pipe = pipe.to(torch.device("cpu"), dtype=torch.float32)
    return pipe, models


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
    return ref, targets, masks, poses


def main() -> int:
    if ARGS.threads > 0:
        torch.set_num_threads(ARGS.threads)
    folder = Path(ARGS.weights)
    t0 = time.perf_counter()
    pipe, models = load_pipeline(folder)
    load_s = time.perf_counter() - t0
    report = {
        "side": "official", "import_s": round(IMPORT_S, 3), "load_s": round(load_s, 3),
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "diffusers": sys.modules["diffusers"].__version__,
                     "transformers": sys.modules["transformers"].__version__, "numpy": np.__version__,
                     "pillow": PIL.__version__, "safetensors": safetensors.__version__},
        "attention_processors": sorted({type(p).__name__ for m in (pipe.reference_unet, pipe.denoising_unet)
                                        for p in m.attn_processors.values()}),
        "params_million": {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 3)
                           for name, m in models.items()},
    }
    if ARGS.check_only:
        print(json.dumps(report), flush=True)
        return 0

    ref, targets, masks, poses = pil_inputs(ARGS.inputs)
    width, height = ref.size
    length = len(targets)
    captured = {}
    decode = pipe.decode_latents

    def recording_decode(latents):
        captured["final_latents"] = latents.detach().clone()
        return decode(latents)

    pipe.decode_latents = recording_decode
    first_step = record_first_call(pipe.denoising_unet)
    generator = torch.manual_seed(ARGS.seed)
    t0 = time.perf_counter()
    video = pipe(ref, targets, masks, poses, width, height, length, ARGS.steps, ARGS.guidance,
                 generator=generator, context_frames=ARGS.context_frames, context_stride=1,
                 context_overlap=ARGS.context_overlap, context_batch_size=1, interpolation_factor=1).videos
    call_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    frames = video[0].permute(1, 2, 3, 0)  # (3,F,H,W) -> (F,H,W,3), as the script's rearrange
    video_uint8 = np.stack([(x * 255).numpy().astype(np.uint8) for x in frames])
    postprocess_s = time.perf_counter() - t0

    save_file({"final_latents": captured["final_latents"].float().contiguous(),
               "video_uint8": torch.from_numpy(np.ascontiguousarray(video_uint8))}, ARGS.out)
    report.update(call_s=round(call_s, 3), first_step_s=first_step["s"], postprocess_s=round(postprocess_s, 4),
                  frames=length, height=height, width=width, steps=ARGS.steps, guidance=ARGS.guidance,
                  context_frames=ARGS.context_frames, context_overlap=ARGS.context_overlap, seed=ARGS.seed,
                  pid=os.getpid())
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
