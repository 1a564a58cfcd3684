"""Reference attention between the ReferenceNet (writer) and the denoising UNet (reader).

Pairing (as the official code, which the golden banks follow): the ``BasicTransformerBlock``s of each
UNet are listed depth-first in registration order with top-level order down_blocks, up_blocks,
mid_block, stably sorted by channel width (descending) and zipped. ``update()`` copies every writer
bank to its reader, cast to ``bank_dtype`` (float16 by default, like the official copy routine).
"""

from __future__ import annotations

import torch
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from anycharv.errors import ConfigError
from anycharv.model.attention import CallState, ReferenceReaderProcessor, ReferenceWriterProcessor

FUSION_SCOPES = {"full": ("down_blocks", "up_blocks", "mid_block"), "midup": ("up_blocks", "mid_block")}


def transformer_blocks(unet: nn.Module, fusion_blocks: str = "full") -> list[tuple[str, BasicTransformerBlock]]:
    """Spatial transformer blocks in pairing order (width-descending, stable over DFS order)."""
    if fusion_blocks not in FUSION_SCOPES:
        raise ConfigError(f"fusion_blocks: {fusion_blocks!r} is not one of {sorted(FUSION_SCOPES)}")
    found = []
    for top in FUSION_SCOPES[fusion_blocks]:
        module = getattr(unet, top, None)
        if module is None:
            continue
        for name, sub in module.named_modules(prefix=top):
            if isinstance(sub, BasicTransformerBlock):
                found.append((name, sub))
    return sorted(found, key=lambda item: -item[1].norm1.normalized_shape[0])


class ReferenceAttentionControl:
    """Installs writer processors on ``writer`` and reader processors on ``reader``.

    ``batch_size`` is accepted for API compatibility with the official class; the reader derives the
    batch from its input. ``bank_dtype=None`` keeps the writer's dtype.
    """

    def __init__(self, writer: nn.Module, reader: nn.Module, do_classifier_free_guidance: bool,
                 batch_size: int = 1, bank_dtype: torch.dtype | None = torch.float16, fusion_blocks: str = "full"):
        self.writer, self.reader = writer, reader
        self.do_classifier_free_guidance = do_classifier_free_guidance
        self.batch_size = batch_size
        self.bank_dtype = bank_dtype
        writers = transformer_blocks(writer, fusion_blocks)
        readers = transformer_blocks(reader, fusion_blocks)
        if len(writers) != len(readers):
            raise ConfigError(
                f"reference attention: writer has {len(writers)} transformer blocks, reader {len(readers)}"
            )
        self.state = CallState()
        self.pairs: list[tuple[str, str, ReferenceReaderProcessor, ReferenceWriterProcessor]] = []
        self._restore: list[tuple[nn.Module, object]] = []
        paired = list(zip(readers, writers))
        for (rname, rblock), (wname, wblock) in paired:  # validate everything before touching a block
            rwidth, wwidth = rblock.norm1.normalized_shape[0], wblock.norm1.normalized_shape[0]
            if rwidth != wwidth:
                raise ConfigError(f"reference attention: {rname} ({rwidth} ch) paired with {wname} ({wwidth} ch)")
            for attn in (rblock.attn1, wblock.attn1):
                if isinstance(attn.processor, (ReferenceReaderProcessor, ReferenceWriterProcessor)):
                    raise ValueError("reference attention is already installed on these UNets; call remove() first")
        for (rname, rblock), (wname, wblock) in paired:
            rproc = ReferenceReaderProcessor(self.state, do_classifier_free_guidance, rblock.attn1.processor)
            wproc = ReferenceWriterProcessor(wblock.attn1.processor)
            for attn, proc in ((rblock.attn1, rproc), (wblock.attn1, wproc)):
                self._restore.append((attn, attn.processor))
                attn.set_processor(proc)
            self.pairs.append((rname, wname, rproc, wproc))
        self._hook = reader.register_forward_pre_hook(self._record_frames, with_kwargs=True)

    def _record_frames(self, module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        self.state.num_frames = sample.shape[2] if sample is not None and sample.ndim == 5 else None

    def update(self) -> None:
        """Copy each writer bank (all its writes, concatenated on the token axis) to its reader."""
        for _, _, rproc, wproc in self.pairs:
            if not wproc.bank:
                rproc.bank = None
                continue
            bank = torch.cat(wproc.bank, dim=1) if len(wproc.bank) > 1 else wproc.bank[0]
            rproc.bank = bank.clone() if self.bank_dtype is None else bank.to(self.bank_dtype, copy=True)

    def clear(self) -> None:
        """Drop writer and reader banks (start of a new reference)."""
        for _, _, rproc, wproc in self.pairs:
            wproc.bank = []
            rproc.bank = None

    def remove(self) -> None:
        """Restore the original processors and detach the hook: both UNets behave plainly again."""
        self.clear()
        for attn, processor in self._restore:
            attn.set_processor(processor)
        self._restore = []
        self._hook.remove()
        self.pairs = []

    def banks(self) -> list[tuple[str, str, torch.Tensor | None]]:
        """(reader name, writer name, bank as the reader holds it) in pairing order."""
        return [(rname, wname, rproc.bank) for rname, wname, rproc, _ in self.pairs]

    def writer_banks(self) -> list[tuple[str, str, torch.Tensor | None]]:
        """(reader name, writer name, what the writer stored) in pairing order."""
        return [
            (rname, wname, (torch.cat(w.bank, dim=1) if w.bank else None)) for rname, wname, _, w in self.pairs
        ]
