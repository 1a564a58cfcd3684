"""AnyCharV inference: put a reference character into a target video, following its pose, any length.

``AnyCharVPipeline`` is a diffusers ``DiffusionPipeline`` (``save_pretrained``/``from_pretrained``
of the whole folder, offloading hooks, progress bar, step-end callbacks). One call:

1. CLIP embeds the reference image (one context token); the VAE encodes the reference image and the
   target frames (in chunks); the masks are resized to latent size; the pose guider runs once.
2. ReferenceNet runs once at timestep 0; its self-attention inputs become the reference banks that
   the denoising UNet's spatial self-attention attends to.
3. Each DDIM step runs the denoising UNet over frame windows and merges the window predictions;
   classifier-free guidance uses a zero context and no reference tokens for the unconditional half.
4. The VAE decodes the latents in chunks.

``parity=True`` reproduces the official implementation exactly, quirks included. The default mode
fixes the quirks that are bugs; each fix is an option of its own (``InferenceOptions``):

==========================  =====================  ==================  ==========================================
option                      parity value           default value       why the default differs
==========================  =====================  ==================  ==========================================
``context_schedule``        ``"official"`` (wraps)  ``"sliding"``       wrapping makes the last window treat the
                                                                        first frames as its temporal neighbours
``window_average``          ``"cfg_only"``         ``"always"``        without CFG the official code sums
                                                                        overlapping windows instead of averaging
``mask_resize``             ``"nearest"``          ``"area"``          nearest sampling from full resolution
                                                                        snaps or drops box edges; area = coverage
``uint8_conversion``        ``"truncate"``         ``"round"``         truncation biases every pixel down by 0.5
``reference_bank_dtype``    ``"float16"``          ``"model"``         the official copy rounds banks to fp16
                                                                        even in fp32/bf16 runs
``latent_scale``            ``"official"``         ``"vae"``           0.18215 is hard-coded; the VAE config
                            (0.18215)              (``scaling_factor``) knows its own factor (same for SD VAEs)
==========================  =====================  ==================  ==========================================

In both modes latents, window accumulators and the scheduler run in float32 while the networks
run in their own dtype (fp16/bf16 on GPU); in a float32 run this is exactly the official math.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from anycharv.errors import InputError
from anycharv.model.context_windows import SCHEDULES, context_windows
from anycharv.model.encoders import (
    OFFICIAL_LATENT_SCALE,
    auto_chunk_frames,
    clip_image_embeds,
    decode_latents,
    encode_frames,
    module_device_dtype,
)
from anycharv.model.feed_forward_chunks import ROWS as FEED_FORWARD_ROWS
from anycharv.model.feed_forward_chunks import blocked_feed_forwards
from anycharv.model.image_processing import (
    MASK_RESIZE_MODES,
    UINT8_MODES,
    as_masks,
    as_rgb_frames,
    as_rgb_image,
    clip_pixel_values,
    masks_to_latent,
    pixels_to_tensor,
    resize_frames,
    video_to_uint8,
)
from anycharv.model.pipeline_output import AnyCharVPipelineOutput

__all__ = ["AnyCharVPipeline", "InferenceOptions", "PARITY_OPTIONS", "DEFAULT_OPTIONS", "OUTPUT_TYPES"]

OUTPUT_TYPES = ("np", "uint8", "pt", "pil", "latent")
_CHOICES = {
    "context_schedule": SCHEDULES,
    "window_average": ("cfg_only", "always"),
    "mask_resize": MASK_RESIZE_MODES,
    "uint8_conversion": UINT8_MODES,
    "reference_bank_dtype": ("float16", "model"),
    "latent_scale": ("official", "vae"),
}


@dataclass(frozen=True)
class InferenceOptions:
    """Behaviours where the official implementation has a quirk (see the module docstring)."""

    context_schedule: Literal["official", "sliding"] = "sliding"
    window_average: Literal["cfg_only", "always"] = "always"
    mask_resize: Literal["nearest", "area"] = "area"
    uint8_conversion: Literal["truncate", "round"] = "round"
    reference_bank_dtype: Literal["float16", "model"] = "model"
    latent_scale: Literal["official", "vae"] = "vae"

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InputError(name, f"expected one of {allowed}, got {getattr(self, name)!r}")


DEFAULT_OPTIONS = InferenceOptions()
PARITY_OPTIONS = InferenceOptions(context_schedule="official", window_average="cfg_only", mask_resize="nearest",
                                  uint8_conversion="truncate", reference_bank_dtype="float16",
                                  latent_scale="official")


def window_groups(windows: list[list[int]], size: int) -> list[list[list[int]]]:
    """Consecutive windows in groups of at most ``size`` that share a length (one UNet call each)."""
    groups: list[list[list[int]]] = []
    for window in windows:
        if groups and len(groups[-1]) < size and len(groups[-1][0]) == len(window):
            groups[-1].append(window)
        else:
            groups.append([window])
    return groups


class AnyCharVPipeline(DiffusionPipeline):
    r"""
    Reference image + target video + pose video + masks -> the video with the reference character.

    The call works at one size `(H, W)` (multiples of 8) on `F` frames of any length: frames are
    encoded to latents `(1, 4, F, H/8, W/8)`, denoised in windows of `context_frames` and decoded.
    The module docstring lists the steps and the parity options.

    Args:
        vae ([`AutoencoderKL`]): SD VAE (`sd-vae-ft-mse`); encodes reference and target frames, decodes the result.
        image_encoder ([`CLIPVisionModelWithProjection`]):
            CLIP vision tower whose projected `image_embeds` `(1, 1, cross_attention_dim)` are both UNets' context.
        reference_unet ([`ReferenceUNet2D`]): Runs once on the reference latent; its attention inputs
            become the reference tokens.
        denoising_unet ([`DenoisingUNet3D`]): The 9-channel video UNet that predicts v per window.
        pose_guider ([`PoseGuider`]): Pose renders `(F, H, W, 3)` to features added after `conv_in`.
        scheduler ([`DDIMScheduler`]): v-prediction, zero-terminal-SNR DDIM (`make_scheduler()`).
        feature_extractor ([`CLIPImageProcessor`]): Resizes and normalises the reference for the image encoder.
        parity (`bool`, *optional*, defaults to `False`):
            Default of every call's `parity`: reproduce the official implementation's quirks.
    """

    model_cpu_offload_seq = "image_encoder->reference_unet->pose_guider->denoising_unet->vae"
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(self, vae: AutoencoderKL, image_encoder: CLIPVisionModelWithProjection, reference_unet,
                 denoising_unet, pose_guider, scheduler: DDIMScheduler, feature_extractor: CLIPImageProcessor,
                 parity: bool = False):
        super().__init__()
        self.register_modules(vae=vae, image_encoder=image_encoder, reference_unet=reference_unet,
                              denoising_unet=denoising_unet, pose_guider=pose_guider, scheduler=scheduler,
                              feature_extractor=feature_extractor)
        self.register_to_config(parity=bool(parity))
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_components(cls, components: dict[str, Any], *, scheduler: DDIMScheduler | None = None,
                        feature_extractor: CLIPImageProcessor | None = None, parity: bool = False
                        ) -> "AnyCharVPipeline":
        """Build from ``load_official_components``/``build_tiny_components`` output (official scheduler
        and a default CLIP processor unless given)."""
        from anycharv.model.scheduling import make_scheduler

        missing = [k for k in ("vae", "image_encoder", "reference_unet", "denoising_unet", "pose_guider")
                   if k not in components]
        if missing:
            raise InputError("components", f"missing {missing}")
        return cls(vae=components["vae"], image_encoder=components["image_encoder"],
                   reference_unet=components["reference_unet"], denoising_unet=components["denoising_unet"],
                   pose_guider=components["pose_guider"], scheduler=scheduler or make_scheduler(),
                   feature_extractor=feature_extractor or CLIPImageProcessor(), parity=parity)

    def enable_compile(self, **compile_kwargs) -> None:
        """``torch.compile`` the denoising UNet (the per-step hot spot) in place; kwargs go to ``torch.compile``."""
        self.denoising_unet.compile(**compile_kwargs)

    # ----------------------------------------------------------------------------------------- options
    def resolve_options(self, parity: bool | None = None, mode: str | None = None, **overrides) -> InferenceOptions:
        """Options of one call: the mode's preset, then explicit overrides (refused in parity mode when
        they would change the result)."""
        if mode is not None:
            if mode not in ("parity", "default"):
                raise InputError("mode", f"expected 'parity' or 'default', got {mode!r}")
            if parity is not None and parity != (mode == "parity"):
                raise InputError("mode", f"mode={mode!r} contradicts parity={parity}")
            parity = mode == "parity"
        if parity is None:
            parity = bool(self.config.get("parity", False))
        given = {k: v for k, v in overrides.items() if v is not None}
        if parity:
            clashes = {k: v for k, v in given.items() if getattr(PARITY_OPTIONS, k) != v}
            if clashes:
                raise InputError(next(iter(clashes)), f"parity mode fixes this option; {clashes} would break parity")
            return PARITY_OPTIONS
        return dataclasses.replace(DEFAULT_OPTIONS, **given)

    # ----------------------------------------------------------------------------------------- inputs
    def check_inputs(self, reference_image, target_frames, pose_frames, masks, height, width):
        """Validate and convert every input; returns uint8 arrays and the output size."""
        ref = as_rgb_image(reference_image, "reference_image")
        tgt = as_rgb_frames(target_frames, "target_frames")
        pose = as_rgb_frames(pose_frames, "pose_frames")
        msk = as_masks(masks, "masks")
        counts = {"target_frames": len(tgt), "pose_frames": len(pose), "masks": len(msk)}
        if len(set(counts.values())) != 1:
            raise InputError("pose_frames" if counts["pose_frames"] != counts["target_frames"] else "masks",
                             f"frame counts disagree: {counts}", "frame_count_mismatch")
        height = tgt.shape[1] if height is None else height
        width = tgt.shape[2] if width is None else width
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, (int, np.integer)) or value <= 0 or value % self.vae_scale_factor:
                raise InputError(name, f"must be a positive multiple of {self.vae_scale_factor}, got {value!r}",
                                 "bad_size")
        return ref, tgt, pose, msk, int(height), int(width)

    # ----------------------------------------------------------------------------------------- steps
    @torch.no_grad()
    def encode_reference(self, ref: np.ndarray, height: int, width: int, scale: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (image_embeds (1,1,D), reference latent (1,4,h,w)) for a uint8 reference image."""
        embeds = clip_image_embeds(self.image_encoder, clip_pixel_values(ref, self.feature_extractor))
        ref_latent = encode_frames(self.vae, resize_frames(ref[None], height, width), scale=scale, chunk_size=1)
        return embeds, ref_latent[:, :, 0]

    @torch.no_grad()
    def encode_pose(self, pose: np.ndarray, height: int, width: int, chunk_size: int) -> torch.Tensor:
        """uint8 (F,H,W,3) -> pose features (1,C,F,h,w); the guider is per frame, so chunking is exact."""
        device, dtype = module_device_dtype(self.pose_guider)
        out = []
        for start in range(0, len(pose), chunk_size):
            x = pixels_to_tensor(resize_frames(pose[start:start + chunk_size], height, width), signed=False)
            out.append(self.pose_guider(x.permute(1, 0, 2, 3)[None].to(device, dtype)))
        return torch.cat(out, dim=2)

    # ----------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(
        self,
        reference_image: PIL.Image.Image | np.ndarray,
        target_frames: list[PIL.Image.Image] | np.ndarray,
        pose_frames: list[PIL.Image.Image] | np.ndarray,
        masks: list[PIL.Image.Image] | np.ndarray,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 3.0,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        context_frames: int = 24,
        context_overlap: int = 6,
        context_stride: int = 1,
        context_batch_size: int = 1,
        encode_chunk_size: int | None = None,
        decode_chunk_size: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        parity: bool | None = None,
        mode: str | None = None,
        context_schedule: str | None = None,
        window_average: str | None = None,
        mask_resize: str | None = None,
        uint8_conversion: str | None = None,
        reference_bank_dtype: str | None = None,
        latent_scale: str | None = None,
    ):
        r"""
        Generate the video.

        Args:
            reference_image (`PIL.Image.Image` or `np.ndarray` of shape `(h, w, 3)` uint8):
                The character to insert, any size (it is resized to `(H, W)` for the VAE).
            target_frames (list of `PIL.Image.Image` or `np.ndarray` of shape `(F, h, w, 3)` uint8):
                The target video; its latent is the UNet's channels 4-7.
            pose_frames (list of `PIL.Image.Image` or `np.ndarray` of shape `(F, h, w, 3)` uint8):
                Pose renders of the person to replace.
            masks (list of `PIL.Image.Image` (`"L"`/`"1"`) or `np.ndarray` of shape `(F, h, w)` uint8 or bool):
                Where the character goes (non-zero), resized to latent size per `mask_resize`.
            height (`int`, *optional*), width (`int`, *optional*):
                Output size `(H, W)`, multiples of 8; default: the target frames' size.
            num_inference_steps (`int`, *optional*, defaults to 30): DDIM steps.
            guidance_scale (`float`, *optional*, defaults to 3.0):
                Classifier-free guidance; at 1.0 or below the unconditional half is skipped.
            eta (`float`, *optional*, defaults to 0.0): DDIM eta (`> 0` draws noise from `generator`).
            generator (`torch.Generator`, *optional*): Source of the initial noise.
            latents (`torch.Tensor` of shape `(1, 4, F, H/8, W/8)`, *optional*): Initial noise instead of drawing it.
            context_frames (`int`, *optional*, defaults to 24), context_overlap (`int`, *optional*, defaults to 6):
                Window length and overlap of the temporal windows.
            context_stride (`int`, *optional*, defaults to 1): Dilated windows; official schedule only.
            context_batch_size (`int`, *optional*, defaults to 1):
                Windows per denoising-UNet call (the official option of that name): same result, fewer and
                larger calls, memory grows with it.
            encode_chunk_size (`int`, *optional*), decode_chunk_size (`int`, *optional*):
                Most frames the VAE and the pose guider see at once (memory bound, same result); default
                ``auto_chunk_frames``: 8 on an accelerator, on CPU 128x128x4 pixels' worth (at least 1).
            output_type (`str`, *optional*, defaults to `"np"`):
                `"np"`, `"uint8"`, `"pt"`, `"pil"` or `"latent"` (see [`AnyCharVPipelineOutput`]).
            return_dict (`bool`, *optional*, defaults to `True`): Return the output class, else a 1-tuple.
            callback_on_step_end (`Callable`, [`PipelineCallback`] or [`MultiPipelineCallbacks`], *optional*):
                Called as `callback(pipe, step, timestep, tensors)`; a returned dict's `latents` replaces them.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Which of `latents`, `noise_pred` to pass.
            parity (`bool`, *optional*), mode (`str`, *optional*):
                The official-quirks preset (`mode="parity"` or `"default"`); default: the pipeline's `parity`.
            context_schedule, window_average, mask_resize, uint8_conversion, reference_bank_dtype, latent_scale
                (`str`, *optional*): Override one option of the default mode (see the module docstring).

        Returns:
            [`AnyCharVPipelineOutput`] (or a 1-tuple): `frames` of `F` frames at `(H, W)`, e.g. `(1, F, H, W, 3)`.
        """
        opts = self.resolve_options(parity, mode, context_schedule=context_schedule, window_average=window_average,
                                    mask_resize=mask_resize, uint8_conversion=uint8_conversion,
                                    reference_bank_dtype=reference_bank_dtype, latent_scale=latent_scale)
        if output_type not in OUTPUT_TYPES:
            raise InputError("output_type", f"expected one of {OUTPUT_TYPES}, got {output_type!r}")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        bad = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise InputError("callback_on_step_end_tensor_inputs",
                             f"{bad} not in the allowed {self._callback_tensor_inputs}")
        if num_inference_steps < 1:
            raise InputError("num_inference_steps", f"must be >= 1, got {num_inference_steps}")

        ref, tgt, pose, msk, height, width = self.check_inputs(reference_image, target_frames, pose_frames, masks,
                                                               height, width)
        num_frames = len(tgt)
        lat_h, lat_w = height // self.vae_scale_factor, width // self.vae_scale_factor
        windows = context_windows(opts.context_schedule, num_frames, context_frames, context_overlap,
                                  context_stride)
        scale = OFFICIAL_LATENT_SCALE if opts.latent_scale == "official" else float(self.vae.config.scaling_factor)
        device = self._execution_device
        unet_dtype = module_device_dtype(self.denoising_unet)[1]
        auto_chunk = auto_chunk_frames(device, height, width)
        encode_chunk_size, decode_chunk_size = encode_chunk_size or auto_chunk, decode_chunk_size or auto_chunk

        # 1. conditions (all float32 on the execution device; cast per call)
        embeds, ref_latent = self.encode_reference(ref, height, width, scale)
        embeds = embeds.to(device, unet_dtype)
        tgt_latents = encode_frames(self.vae, resize_frames(tgt, height, width), scale=scale,
                                    chunk_size=encode_chunk_size, device=device)
        mask_latents = masks_to_latent(msk, lat_h, lat_w, opts.mask_resize).to(device)
        pose_fea = self.encode_pose(pose, height, width, encode_chunk_size).to(device)

        # 2.-3. initial noise, reference pass and the denoising loop
        latents = self.denoise(ref_latent, embeds, tgt_latents, mask_latents, pose_fea,
                               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, eta=eta,
                               generator=generator, latents=latents, windows=windows, options=opts,
                               context_batch_size=context_batch_size,
                               callback_on_step_end=callback_on_step_end, tensor_inputs=tensor_inputs)

        # 4. decode
        frames = self.postprocess(latents, output_type, options=opts, decode_chunk_size=decode_chunk_size)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return AnyCharVPipelineOutput(frames=frames)

    @torch.no_grad()
    def denoise(self, ref_latent: torch.Tensor, embeds: torch.Tensor, target_latents: torch.Tensor,
                mask_latents: torch.Tensor, pose_features: torch.Tensor, *, num_inference_steps: int = 30,
                guidance_scale: float = 3.0, eta: float = 0.0, generator: torch.Generator | None = None,
                latents: torch.Tensor | None = None, windows: list[list[int]] | None = None,
                options: InferenceOptions | None = None, context_frames: int = 24, context_overlap: int = 6,
                context_batch_size: int = 1, callback_on_step_end=None,
                tensor_inputs: list[str] | None = None) -> torch.Tensor:
        r"""
        The sampling loop on conditions already in latent space (what ``__call__`` runs after encoding;
        the self-boost job and training validation call it on cached latents).

        Args:
            ref_latent (`torch.Tensor` of shape `(1, 4, h, w)`): Reference image latent (scaled).
            embeds (`torch.Tensor` of shape `(1, 1, D)`): CLIP image embedding of the reference.
            target_latents (`torch.Tensor` of shape `(1, 4, F, h, w)`): The UNet's channels 4-7.
            mask_latents (`torch.Tensor` of shape `(1, 1, F, h, w)`): The mask at latent size (1 = character).
            pose_features (`torch.Tensor` of shape `(1, C0, F, h, w)`): ``PoseGuider`` output.
            windows (`list[list[int]]`, *optional*): Frame windows; default: the options' schedule with
                `context_frames` / `context_overlap`.
            The other arguments are ``__call__``'s.

        Returns:
            `torch.Tensor` of shape `(1, 4, F, h, w)`, float32: the denoised latents.
        """
        from anycharv.model.reference_attention import ReferenceAttentionControl

        opts = options or self.resolve_options()
        device = self._execution_device
        unet_dtype = module_device_dtype(self.denoising_unet)[1]
        num_frames = target_latents.shape[2]
        if windows is None:
            windows = context_windows(opts.context_schedule, num_frames, context_frames, context_overlap, 1)
        if not isinstance(context_batch_size, int) or context_batch_size < 1:
            raise InputError("context_batch_size", f"must be an integer >= 1, got {context_batch_size!r}")
        groups = window_groups(windows, context_batch_size)
        tensor_inputs = list(tensor_inputs or ["latents"])
        do_cfg = guidance_scale > 1.0
        self._guidance_scale, self._num_timesteps, self._interrupt = guidance_scale, num_inference_steps, False
        embeds = embeds.to(device, unet_dtype)
        context = torch.cat([torch.zeros_like(embeds), embeds]) if do_cfg else embeds
        target_latents, mask_latents = target_latents.to(device).float(), mask_latents.to(device).float()
        pose_features = pose_features.to(device)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = (1, 4, num_frames, *target_latents.shape[3:])
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=embeds.dtype)
        elif tuple(latents.shape) != shape:
            raise InputError("latents", f"expected shape {shape}, got {tuple(latents.shape)}", "bad_shape")
        latents = (latents.to(device) * self.scheduler.init_noise_sigma).float()
        step_kwargs = self._step_kwargs(eta, generator, opts)

        halves = 2 if do_cfg else 1
        bank_dtype = torch.float16 if opts.reference_bank_dtype == "float16" else None
        control = ReferenceAttentionControl(self.reference_unet, self.denoising_unet, do_cfg, batch_size=1,
                                            bank_dtype=bank_dtype, fusion_blocks="full")
        # row blocks for the feed-forwards: same numbers, less memory, faster on CPU (feed_forward_chunks)
        rows = FEED_FORWARD_ROWS if device.type == "cpu" else None
        try:
            with blocked_feed_forwards((self.reference_unet, self.denoising_unet), rows):
                ref_dtype = module_device_dtype(self.reference_unet)[1]
                self.reference_unet(ref_latent.to(device, ref_dtype).repeat(halves, 1, 1, 1),
                                    torch.zeros_like(timesteps[0]), encoder_hidden_states=context.to(ref_dtype))
                control.update()
                with self.progress_bar(total=len(timesteps)) as progress:
                    for i, t in enumerate(timesteps):
                        if self._interrupt:
                            break
                        noise_pred, counter = self._window_predictions(
                            latents, t, groups, target_latents, mask_latents, pose_features, context, halves)
                        if do_cfg:
                            uncond, cond = (noise_pred / counter).chunk(2)
                            noise_pred = uncond + guidance_scale * (cond - uncond)
                        elif opts.window_average == "always":
                            noise_pred = noise_pred / counter
                        latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
                        if callback_on_step_end is not None:
                            local = {"latents": latents, "noise_pred": noise_pred}
                            out = callback_on_step_end(self, i, t, {k: local[k] for k in tensor_inputs}) or {}
                            latents = out.pop("latents", latents)
                        progress.update()
        finally:
            control.remove()
        return latents

    def _window_predictions(self, latents: torch.Tensor, t: torch.Tensor, groups: list[list[list[int]]],
                            target_latents: torch.Tensor, mask_latents: torch.Tensor, pose_features: torch.Tensor,
                            context: torch.Tensor, halves: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's UNet predictions summed over the windows, (halves,4,F,h,w), and how many windows
        covered each frame, (1,1,F,1,1)."""
        device, unet_dtype = latents.device, module_device_dtype(self.denoising_unet)[1]
        noise_pred = torch.zeros((halves, *latents.shape[1:]), device=device, dtype=torch.float32)
        counter = torch.zeros((1, 1, latents.shape[2], 1, 1), device=device, dtype=torch.float32)
        for group in groups:
            # batch rows: [uncond windows..., cond windows...], as the reader expects
            idx = [torch.tensor(window, device=device) for window in group]
            unet_in = torch.cat([torch.cat([self.scheduler.scale_model_input(latents[:, :, w], t),
                                            target_latents[:, :, w], mask_latents[:, :, w]], dim=1) for w in idx])
            pose_in = torch.cat([pose_features[:, :, w] for w in idx])
            pred = self.denoising_unet(unet_in.repeat(halves, 1, 1, 1, 1).to(unet_dtype), t,
                                       encoder_hidden_states=context.repeat_interleave(len(idx), dim=0),
                                       pose_cond_fea=pose_in.repeat(halves, 1, 1, 1, 1))
            pred = pred.float().unflatten(0, (halves, len(idx)))
            for j, w in enumerate(idx):
                noise_pred[:, :, w] = noise_pred[:, :, w] + pred[:, j]
                counter[:, :, w] = counter[:, :, w] + 1
        return noise_pred, counter

    def _step_kwargs(self, eta: float, generator, options: InferenceOptions) -> dict[str, Any]:
        """``eta`` for DDIM; other solvers take no eta. Parity needs the official DDIM sampler."""
        if not isinstance(self.scheduler, DDIMScheduler):
            if options is PARITY_OPTIONS:  # parity requested (explicit quirk overrides are a copy)
                raise InputError("scheduler", f"parity mode needs the official DDIMScheduler, not "
                                              f"{type(self.scheduler).__name__}")
            if eta:
                raise InputError("eta", f"only DDIM takes eta; {type(self.scheduler).__name__} does not")
            return {}
        return {"eta": eta, "generator": generator} if eta > 0 else {"eta": eta}

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def postprocess(self, latents: torch.Tensor, output_type: str = "np", *, options: InferenceOptions | None = None,
                    decode_chunk_size: int | None = None):
        """Latents (1,4,F,h,w) -> frames in ``output_type`` (see ``AnyCharVPipelineOutput``), decoded in chunks;
        uint8 frames are filled chunk by chunk, so no float copy of the whole video is kept."""
        if output_type not in OUTPUT_TYPES:
            raise InputError("output_type", f"expected one of {OUTPUT_TYPES}, got {output_type!r}")
        opts = options or self.resolve_options()
        scale = OFFICIAL_LATENT_SCALE if opts.latent_scale == "official" else float(self.vae.config.scaling_factor)
        if output_type == "latent":
            return latents
        num_frames = latents.shape[2]
        height, width = latents.shape[3] * self.vae_scale_factor, latents.shape[4] * self.vae_scale_factor
        chunk_size = decode_chunk_size or auto_chunk_frames(module_device_dtype(self.vae)[0], height, width)
        uint8_mode = opts.uint8_conversion
        if output_type in ("np", "pt"):
            video = decode_latents(self.vae, latents, scale=scale, chunk_size=chunk_size)  # (1,3,F,H,W)
            video = video.permute(0, 2, 1, 3, 4)  # (1,F,3,H,W)
            return video.contiguous() if output_type == "pt" else video.permute(0, 1, 3, 4, 2).numpy()
        frames = np.empty((1, num_frames, height, width, 3), dtype=np.uint8)

        def sink(sl: slice, chunk: torch.Tensor) -> None:
            frames[0, sl] = video_to_uint8(chunk, uint8_mode).permute(0, 2, 3, 1).numpy()

        decode_latents(self.vae, latents, scale=scale, chunk_size=chunk_size, sink=sink)
        if output_type == "pil":
            return [[PIL.Image.fromarray(f) for f in frames[0]]]
        return frames
