"""`anycharv infer`: put a reference character into a video in place of one tracked person.

Steps: prepare the target video (track people, box masks, pose renders at the model size), cut the
character out of the reference photo and place it on the model canvas, run the pipeline, paste the
generated person back into the source frames (only its box changes), write an mp4 at the source fps.

The Python API behind the command is ``anycharv.inference.video.infer_video`` (per-video work) and
``anycharv.model.components`` (loading the networks); this module only handles the command line.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

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
    p.add_argument("--max-long-side", type=int, metavar="PX",
                   help="cap of the model canvas's long side; the short side shrinks to keep the aspect ratio "
                        "(default 2.5x the short side; 0: no cap)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda:N, mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="network dtype (auto: fp32 on CPU, bf16/fp16 on GPU)")
    p.add_argument("--no-paste-back", action="store_true",
                   help="write the raw generated frames at the model size instead of compositing")
    p.add_argument("--feather", type=float, metavar="PX", help="paste-back feather in source pixels "
                   "(default: 2%% of the source short side)")
    p.add_argument("--box-pad", type=float, default=0.1,
                   help="box enlargement per side, share of the box (default 0.1)")
    p.add_argument("--ref-background", default="black",
                   help="reference canvas colour: black (default), white, gray or R,G,B")
    p.add_argument("--no-ref-segment", action="store_true", help="place the whole reference photo (no isnet cut-out)")
    p.add_argument("--context-frames", type=int, default=24, help="frames per temporal window (default 24)")
    p.add_argument("--context-overlap", type=int, default=6, help="overlap of consecutive windows (default 6)")
    p.add_argument("--context-batch-size", type=int, default=1, metavar="N",
                   help="windows per denoising-UNet call (default 1; same result, more memory)")
    p.add_argument("--solver", choices=["ddim", "dpmpp", "unipc"], default="ddim",
                   help="sampler: ddim (default, the official one), or DPM-Solver++ / UniPC (2nd order, "
                        "nearly the DDIM result in fewer --steps, e.g. 6-8; not with --parity)")
    p.add_argument("--parity", action="store_true", help="reproduce the official implementation's quirks exactly")
    p.add_argument("--config", metavar="YAML", help="preprocess config YAML (detector, tracker, pose backend, isnet)")
    p.add_argument("--save-inputs", metavar="DIR", help="also write the model inputs (ref, masks, poses) as mp4/png")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ CLI
def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _list_people(args, cfg) -> int:
    from anycharv.inference.target_prep import read_target_frames, track_people
    from anycharv.preprocessing.detect_track import PersonTracker, choose_main_track

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
    from anycharv.output_paths import check_output_dir, check_output_file

    check_output_file(args.out, "--out")  # before hours of work, not after
    if args.save_inputs:
        check_output_dir(args.save_inputs, "--save-inputs")
    if args.steps < 1:
        raise InputError("--steps", f"must be >= 1, got {args.steps}")
    if args.context_batch_size < 1:
        raise InputError("--context-batch-size", f"must be >= 1, got {args.context_batch_size}")
    if args.parity and args.solver != "ddim":
        raise InputError("--solver", f"{args.solver} cannot reproduce the official output; --parity needs ddim")
    if not args.weights and not args.preset:
        raise InputError("--weights", "give --weights DIR_OR_HUB_ID, or --preset tiny for random tiny weights")

    from anycharv.devices import pick_device, pick_dtype
    from anycharv.inference.video import infer_video, isnet_segmenter, save_inputs
    from anycharv.model.components import build_pipeline, load_components
    from anycharv.model.reference_prep import load_image
    from anycharv.model.video_writer import write_video

    load_image(args.ref, "--ref")  # fail fast on an unreadable reference, before anything heavy
    if args.weights and not Path(args.weights).expanduser().exists() and not _HUB_ID.fullmatch(args.weights):
        raise InputError(f"--weights {args.weights}", "no such folder (and not a hub id owner/name)")
    if args.preset == "tiny":
        _err(RANDOM_WEIGHTS_WARNING)
    size = args.size or DEFAULT_SIZE["tiny" if args.preset == "tiny" else "weights"]

    from anycharv.inference.target_prep import model_size, prepare_target

    # The target first: a video without people or a wrong --person fails before the networks load.
    t0 = time.perf_counter()
    target = prepare_target(args.video, cfg, args.person, size, args.max_frames, start=args.start,
                            box_pad=args.box_pad, max_long_side=args.max_long_side)
    prep_s = time.perf_counter() - t0
    uncapped = model_size(target.source_size, size, 0)
    if target.model_size != uncapped:
        _err(f"note: model canvas capped at {target.model_size[0]}x{target.model_size[1]} instead of "
             f"{uncapped[0]}x{uncapped[1]} (extreme aspect ratio; --max-long-side sets the cap)")
    from anycharv.allocator import keep_freed_memory

    keep_freed_memory()  # one job per process: reuse freed pages instead of faulting them in every step
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    t0 = time.perf_counter()
    components = load_components(args.weights, preset=args.preset, vae=args.vae, image_encoder=args.image_encoder,
                                 seed=args.seed)
    pipe = build_pipeline(components, device=device, dtype=dtype, parity=args.parity)
    if args.solver != "ddim":
        from anycharv.model.scheduling import make_solver

        pipe.scheduler = make_solver(args.solver)
    load_s = time.perf_counter() - t0
    segment = None if args.no_ref_segment else isnet_segmenter(cfg.mask)

    result = infer_video(pipe, args.ref, target=target, steps=args.steps, guidance=args.guidance, seed=args.seed,
                         paste_back=not args.no_paste_back, feather_px=args.feather, segment=segment,
                         ref_background=args.ref_background, context_frames=args.context_frames,
                         context_overlap=args.context_overlap, context_batch_size=args.context_batch_size,
                         log=_err)
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
