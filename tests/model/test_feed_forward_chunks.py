"""Feed-forwards over row blocks (``anycharv.model.feed_forward_chunks``): the same numbers (a small block's
matrix product may round a last bit differently), restored afterwards, and engaged by the pipeline on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention import FeedForward

from anycharv.model import feed_forward_chunks as ffc
from anycharv.model import pipeline as pipeline_module


def _calls(ff: FeedForward):
    """Rows seen by each call of the feed-forward's first layer (a list that fills), and the hook."""
    seen: list[int] = []
    handle = ff.net[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0][..., 0].numel()))
    return seen, handle


@pytest.mark.parametrize("shape", [(3, 37, 24), (2, 3, 5, 24), (1, 10, 24)])
def test_blocks_give_the_whole_result(monkeypatch, shape):
    monkeypatch.setattr(ffc, "MIN_HIDDEN_BYTES", 0)
    torch.manual_seed(0)
    ff = FeedForward(24, activation_fn="geglu").eval()
    seen, _ = _calls(ff)
    x = torch.randn(shape)
    with torch.no_grad():
        whole = ff(x)
        with ffc.blocked_feed_forwards([ff], rows=10) as changed:
            blocked = ff(x)
        after = ff(x)
    assert changed == 1
    rows = int(np.prod(shape[:-1]))
    assert seen[1:-1] == ([rows] if rows <= 10 else [10] * (rows // 10) + ([rows % 10] if rows % 10 else []))
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-6)
    assert "forward" not in ff.__dict__ and torch.equal(after, whole)


def test_small_calls_stay_whole_and_none_changes_nothing():
    ff = FeedForward(16, activation_fn="geglu").eval()
    seen, _ = _calls(ff)
    with torch.no_grad():
        with ffc.blocked_feed_forwards([ff], rows=4):  # 64 rows x 128 hidden floats: under MIN_HIDDEN_BYTES
            ff(torch.randn(4, 16, 16))
        with ffc.blocked_feed_forwards([ff], rows=None) as changed:
            assert changed == 0 and "forward" not in ff.__dict__
    assert seen == [64]


def test_restored_when_the_block_raises():
    ff = FeedForward(8, activation_fn="geglu")
    with pytest.raises(RuntimeError, match="boom"):
        with ffc.blocked_feed_forwards([ff], rows=2):
            assert "forward" in ff.__dict__
            raise RuntimeError("boom")
    assert "forward" not in ff.__dict__


def test_pipeline_on_cpu_runs_its_feed_forwards_in_blocks_with_the_same_output(golden_pipe, monkeypatch):
    """Blocks of 5 rows forced on (the golden networks are too small for the default threshold): the
    generated video equals the one without blocks, and the denoiser's feed-forwards did see blocks."""
    rng = np.random.default_rng(3)
    frames, size = 6, 64
    inputs = dict(reference_image=rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                  target_frames=rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8),
                  pose_frames=rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8),
                  masks=(rng.random((frames, size, size)) > 0.5).astype(np.uint8) * 255)

    def run():
        out = golden_pipe(**inputs, height=size, width=size, num_inference_steps=2, guidance_scale=3.0,
                          generator=torch.manual_seed(0), context_frames=4, context_overlap=2, output_type="pt")
        return out.frames

    monkeypatch.setattr(pipeline_module, "FEED_FORWARD_ROWS", None)
    plain = run()
    ff = next(m for m in golden_pipe.denoising_unet.modules() if isinstance(m, FeedForward))
    seen, handle = _calls(ff)
    monkeypatch.setattr(ffc, "MIN_HIDDEN_BYTES", 0)
    monkeypatch.setattr(pipeline_module, "FEED_FORWARD_ROWS", 5)
    try:
        blocked = run()
    finally:
        handle.remove()
    assert seen and max(seen) <= 5
    torch.testing.assert_close(blocked, plain, rtol=0, atol=1e-5)
    assert not any("forward" in m.__dict__ for m in golden_pipe.denoising_unet.modules())
