"""Reference placement: the character is cropped and scaled without distortion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anycharv.errors import InputError
from anycharv.model.reference_prep import parse_background, place_on_canvas, prepare_reference


def _photo_with_character(h=300, w=400, box=(120, 40, 180, 220), color=(200, 30, 60)):
    """A noisy photo with a solid-colour 'character' rectangle (x0,y0,x1,y1) and its mask."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = color
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    return img, mask


@pytest.mark.parametrize("canvas", [(64, 96), (128, 64), (96, 96)])
def test_aspect_ratio_is_kept_and_background_is_black(canvas):
    width, height = canvas
    img, mask = _photo_with_character()  # character 60 x 180 (aspect 1:3)
    out, out_mask, p = place_on_canvas(img, mask, width, height, margin=0.0)
    assert out.shape == (height, width, 3) and out_mask.shape == (height, width)
    assert p.crop == (120, 40, 180, 220)
    assert abs(p.w / p.h - 60 / 180) <= 1.0 / min(p.w, p.h) + 1e-9
    assert p.h == height or p.w == width  # as large as fits
    assert 0 <= p.x and p.x + p.w <= width and 0 <= p.y and p.y + p.h <= height
    ys, xs = np.nonzero(out_mask > 127)
    assert abs((xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1) - 1 / 3) < 0.08
    outside = out_mask == 0
    assert np.all(out[outside] == 0)
    inner = out[p.y + 2:p.y + p.h - 2, p.x + 2:p.x + p.w - 2]
    assert np.all(np.abs(inner.astype(int) - [200, 30, 60]) <= 2)


def test_margin_and_configurable_background():
    img, mask = _photo_with_character(box=(100, 100, 300, 200))  # wide character, 2:1
    out, out_mask, p = place_on_canvas(img, mask, 64, 96, background=parse_background("255,255,255"), margin=0.1)
    assert p.w <= round(64 * 0.8) and abs(p.w / p.h - 2.0) < 0.15
    assert p.y == (96 - p.h) // 2  # centred vertically
    assert np.all(out[out_mask == 0] == 255)
    assert parse_background("white") == (255, 255, 255)
    with pytest.raises(InputError):
        parse_background("purple")


def test_without_mask_the_whole_photo_is_placed_undistorted():
    img, _ = _photo_with_character(h=100, w=50)
    out, out_mask, p = place_on_canvas(img, None, 64, 64, margin=0.0)
    assert (p.w, p.h) == (32, 64) and p.crop == (0, 0, 50, 100)
    assert np.all(out_mask[:, p.x:p.x + p.w] == 255) and np.all(out[:, :p.x] == 0)


def test_empty_mask_is_an_input_error():
    img, mask = _photo_with_character()
    with pytest.raises(InputError, match="no character"):
        place_on_canvas(img, np.zeros_like(mask), 64, 96)


def test_prepare_reference_uses_alpha_channel_and_segmenter(tmp_path):
    img, mask = _photo_with_character()
    rgba = np.dstack([img, mask])
    path = tmp_path / "char.png"
    Image.fromarray(rgba, "RGBA").save(path)
    called = []
    ref = prepare_reference(path, 64, 96, segment=lambda x: called.append(1) or mask)
    assert ref.segmented and not called  # the alpha channel wins over the segmenter
    assert ref.placement.crop == (120, 40, 180, 220) and ref.source_size == (400, 300)
    jpg = tmp_path / "char.jpg"
    Image.fromarray(img).save(jpg)
    ref2 = prepare_reference(jpg, 64, 96, segment=lambda x: mask)
    assert ref2.segmented and ref2.placement.crop == (120, 40, 180, 220)


def test_unreadable_reference_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.raises(InputError) as err:
        prepare_reference(bad, 64, 96)
    assert "notes.png" in str(err.value) and err.value.code == "unreadable"
    with pytest.raises(InputError, match="not found"):
        prepare_reference(tmp_path / "missing.jpg", 64, 96)
