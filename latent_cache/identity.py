"""What identifies the encoders a cache was made with, computed on the driver without loading them:
the tiny preset by name and seed, weights by the content of their files (so a copied folder at
another path is the same identity, and a changed file is not)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from anycharv.hashing import sha256_file_cached
from anycharv.latent_cache.config import EncoderSource

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".json")


def folder_digest(*folders: Path) -> str:
    """A short digest of the weight and config files of ``folders`` (by content and relative path;
    with several folders, each file is named under its folder's name)."""
    digest = hashlib.sha256()
    for folder in folders:
        prefix = f"{folder.name}/" if len(folders) > 1 else ""
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
            digest.update(f"{prefix}{path.relative_to(folder)}:{sha256_file_cached(path)}\n".encode())
    return digest.hexdigest()[:16]


def encoder_identity(source: EncoderSource, seed: int = 0) -> dict:
    if source.preset:
        return {"preset": source.preset, "seed": seed}
    out = {}
    for name in ("weights", "vae", "image_encoder"):
        value = getattr(source, name)
        if value:
            path = Path(value).expanduser()
            out[name] = folder_digest(path) if path.is_dir() else f"hub:{value}"
    return out


def cache_encoder_source(cache_dir: str | Path) -> EncoderSource:
    """The encoders a cache was made with (its ``encoders.json``), so jobs that read the cache
    (training validation, self-boost) decode with the same VAE. InputError naming the folder when
    the file is missing or its folders have moved."""
    import json

    from anycharv.errors import InputError

    path = Path(cache_dir).expanduser() / "encoders.json"
    try:
        record = json.loads(path.read_text())
        source = EncoderSource(**record["source"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(str(cache_dir), f"no readable encoders.json ({exc}); rerun `anycharv cache` on it or "
                         "give the encoders explicitly", code="no_encoders") from exc
    for name in ("weights", "vae", "image_encoder"):
        value = getattr(source, name)
        if value and value.startswith(("/", "~", ".")) and not Path(value).expanduser().exists():
            raise InputError(str(path), f"its {name} folder {value} is gone; give the encoders explicitly",
                             code="no_encoders")
    return source
