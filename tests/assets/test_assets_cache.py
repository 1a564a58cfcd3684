"""The asset cache: idempotent fetches, checksum checks, atomic installs, clear errors.

The default cache is filled by `anycharv assets fetch` before the suite runs (Makefile); tests that
change files work in a temporary ANYCHARV_CACHE and re-download only the small ultralytics wheel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from anycharv import assets
from anycharv.assets import ASSETS, asset_path, cache_dir, fetch_assets, list_assets
from anycharv.errors import AssetError

SMALL = "zidane.jpg"  # 50 KB image from the 1.4 MB ultralytics wheel: the cheapest real re-download


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def temp_cache(tmp_path, monkeypatch) -> SimpleNamespace:
    """A fresh, empty ANYCHARV_CACHE (`.root`); the default cache's copies stay in `.sources`."""
    sources = {name: asset_path(name, fetch=True) for name in (SMALL, "bus.jpg")}
    root = tmp_path / "cache"
    monkeypatch.setenv("ANYCHARV_CACHE", str(root))
    monkeypatch.setattr(assets, "_VERIFIED", {})
    return SimpleNamespace(root=root, sources=sources)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def test_registry_entries_are_consistent():
    assert set(ASSETS) == {
        "yolo11n-pose.pt", "isnet.onnx", "isnet-fp16.onnx", "sports2d_demo.mp4", "pose2sim_cam01.mp4",
        "pose2sim_cam02.mp4",
        "astronaut.png", "grace_hopper.jpg", "bus.jpg", "zidane.jpg",
    }
    for name, a in ASSETS.items():
        assert a.name == name
        assert a.registry in {"pypi", "npm"}
        assert ("==" in a.package) if a.registry == "pypi" else ("@" in a.package[1:])
        assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0
        assert a.kind in {"model", "video", "image"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        ASSETS[SMALL].sha256 = "0" * 64  # type: ignore[misc]


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ANYCHARV_CACHE", str(tmp_path / "c"))
    assert cache_dir() == (tmp_path / "c").resolve()
    monkeypatch.delenv("ANYCHARV_CACHE")
    import platformdirs

    assert cache_dir() == Path(platformdirs.user_cache_dir("anycharv"))


def test_default_cache_is_complete_and_verified():
    paths = fetch_assets(progress=False)
    assert [p.name for p in paths] == list(ASSETS)
    for name, path in zip(ASSETS, paths):
        assert path == cache_dir() / "assets" / name
        assert path.stat().st_size == ASSETS[name].size
        assert _sha256(path) == ASSETS[name].sha256


def test_second_fetch_touches_nothing(monkeypatch):
    fetch_assets(progress=False)
    files = [cache_dir() / "assets" / name for name in ASSETS]
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files}

    def no_network(*args, **kwargs):
        raise AssertionError(f"cached assets must not start a subprocess: {args}")

    monkeypatch.setattr(assets.subprocess, "run", no_network)
    monkeypatch.setattr(assets, "_VERIFIED", {})  # force a real re-hash, not the in-process memo
    paths = fetch_assets(progress=False)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    assert after == before
    assert all(asset_path(p.name, fetch=True) == p for p in paths)


def test_unknown_name_is_a_clear_error():
    for call in (lambda: asset_path("nope.bin"), lambda: fetch_assets(["bus.jpg", "nope.bin"], progress=False)):
        with pytest.raises(AssetError, match=r"unknown asset 'nope.bin'; known assets: .*zidane.jpg"):
            call()


def test_missing_asset_without_fetch_names_the_command(temp_cache):
    with pytest.raises(AssetError, match=r"'zidane.jpg' is not in the cache .*anycharv assets fetch zidane.jpg"):
        asset_path(SMALL, fetch=False)
    assert not (temp_cache.root / "assets" / SMALL).exists()


def test_corrupt_copy_is_caught_then_refetched(temp_cache):
    original = temp_cache.sources[SMALL]
    target = temp_cache.root / "assets" / SMALL
    target.parent.mkdir(parents=True)
    shutil.copyfile(original, target)
    assert asset_path(SMALL, fetch=False) == target  # an intact copy is accepted as is

    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF  # same size, one flipped byte: only the checksum can notice
    target.write_bytes(bytes(data))
    with pytest.raises(AssetError, match=r"zidane.jpg.*fails its sha256/size check.*anycharv assets fetch zidane.jpg"):
        asset_path(SMALL, fetch=True)
    row = next(r for r in list_assets() if r["name"] == SMALL)
    assert row["status"] == "corrupt" and row["present"] is False

    [path] = fetch_assets([SMALL], progress=False)
    assert path == target
    assert target.read_bytes() == original.read_bytes()
    assert asset_path(SMALL, fetch=False) == target
    assert _leftovers(target.parent) == []


def test_one_download_per_archive(temp_cache, monkeypatch):
    calls = []
    real_download = assets._download

    def counting_download(registry, package, workdir):
        calls.append(package)
        return real_download(registry, package, workdir)

    monkeypatch.setattr(assets, "_download", counting_download)
    paths = fetch_assets(["zidane.jpg", "bus.jpg", "zidane.jpg"], progress=False)
    assert calls == [ASSETS["bus.jpg"].package]
    assert [p.name for p in paths] == ["zidane.jpg", "bus.jpg"]
    for p in paths:
        assert p.read_bytes() == temp_cache.sources[p.name].read_bytes()
    assert asset_path("bus.jpg", fetch=True) == paths[1]
    assert len(calls) == 1  # cached now: no second download
    assert _leftovers(temp_cache.root / "assets") == []


def test_asset_path_fetches_missing_file(temp_cache):
    path = asset_path(SMALL, fetch=True)
    assert path == temp_cache.root / "assets" / SMALL
    assert _sha256(path) == ASSETS[SMALL].sha256


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sha256": "0" * 64}, r"checksum mismatch"),
        ({"member": "ultralytics/assets/no-such-file.jpg"}, r"has no member"),
        ({"package": "ultralytics==0.0.0.999"}, r"ultralytics==0.0.0.999: download from pypi failed"),
    ],
)
def test_failed_fetch_leaves_nothing_under_the_final_name(temp_cache, monkeypatch, change, message):
    bogus = dataclasses.replace(ASSETS[SMALL], name="bogus.jpg", **change)
    monkeypatch.setitem(ASSETS, "bogus.jpg", bogus)
    with pytest.raises(AssetError, match=message):
        fetch_assets(["bogus.jpg"], progress=False)
    folder = temp_cache.root / "assets"
    assert not (folder / "bogus.jpg").exists()
    assert _leftovers(folder) == []


def test_list_assets_reports_presence(temp_cache):
    rows = list_assets()
    assert [r["name"] for r in rows] == list(ASSETS)
    assert all(r["present"] is False and r["status"] == "missing" for r in rows)
    asset_path(SMALL, fetch=True)
    rows = {r["name"]: r for r in list_assets()}
    assert rows[SMALL]["present"] is True and rows[SMALL]["status"] == "ok"
    assert rows[SMALL]["path"] == str(temp_cache.root / "assets" / SMALL)
    assert rows[SMALL]["size"] == ASSETS[SMALL].size
    assert rows[SMALL]["license"] == ASSETS[SMALL].license
    assert rows[SMALL]["kind"] == "image"
    assert rows["isnet.onnx"]["present"] is False
