"""Bytes of a shard member <-> values, by the member's extension; never pickle."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from anycharv.errors import InputError


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def decode(field: str, data: bytes, where: str = "member") -> Any:
    """The value of member ``field`` (``.npy`` array, ``.json`` object, ``.png`` RGB array);
    InputError naming ``where`` (shard and key) when the bytes do not decode."""
    try:
        if field.endswith(".npy"):
            return np.load(io.BytesIO(data), allow_pickle=False)
        if field.endswith(".json"):
            return json.loads(data)
        if field.endswith(".png"):
            import cv2

            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError("not a PNG image")
            return image[..., ::-1].copy()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a corrupt member
        raise InputError(where, f"member {field!r} does not decode: {exc}", code="corrupt_member") from exc
    raise InputError(where, f"member {field!r} has an unknown extension", code="unknown_member")
