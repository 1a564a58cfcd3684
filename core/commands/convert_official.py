"""`anycharv convert-official SRC DST`: official AnyCharV weights -> our diffusers-style folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_DESCRIPTION = (
    "Read an official AnyCharV release (local folder or hub id; Moore-AnimateAnyone state-dict naming, "
    "or the golden-fixture layout weights/ + configs/) and write one diffusers folder per component "
    "(config.json + diffusion_pytorch_model.safetensors; the VAE and CLIP image encoder too when found), "
    "loadable with from_pretrained."
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert-official", help="convert official AnyCharV weights to diffusers folders",
                                   description=_DESCRIPTION)
    parser.add_argument("src", metavar="SRC", help="official release folder or Hugging Face hub id")
    parser.add_argument("dst", metavar="DST", help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--vae", metavar="PATH", help="diffusers AutoencoderKL folder to include")
    parser.add_argument("--image-encoder", metavar="PATH", help="transformers CLIPVisionModelWithProjection folder")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None,
                        help="store weights in this dtype (default: as read)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from anycharv.devices import pick_dtype
    from anycharv.errors import InputError
    from anycharv.model.official import load_official_components

    dst = Path(args.dst)
    if dst.exists() and not args.overwrite:
        raise InputError("DST", f"{dst} already exists (use --overwrite to replace it)", code="exists")
    dtype = pick_dtype(torch.device("cpu"), args.dtype) if args.dtype else None
    components = load_official_components(args.src, vae=args.vae, image_encoder=args.image_encoder, torch_dtype=dtype)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        for name, model in components.items():
            model.save_pretrained(str(tmp / name), safe_serialization=True)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name in components:
        print(f"{name}: {dst / name}")
    return 0
