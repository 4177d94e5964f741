"""Atomic writes: whole files only, no temporary file left, and the umask's mode, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest
from PIL import Image

from retouch.io.atomic import atomic_write_bytes, atomic_write_json
from retouch.io.png import save_png


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_take_the_umask_like_any_write(tmp_path, umask, mask, mode):
    umask(mask)
    written = [
        atomic_write_bytes(tmp_path / "a.bin", b"x"),
        atomic_write_json(tmp_path / "a.json", {"a": 1}),
        save_png(Image.new("RGB", (4, 4)), tmp_path / "a.png", {
            "task": "generate", "prompt": "x", "seed": 1, "steps": 1, "guidance_scale": 1,
            "scheduler": "ddim", "width": 4, "height": 4, "model": "m"}),
    ]
    assert [stat.S_IMODE(path.stat().st_mode) for path in written] == [mode] * 3
    (tmp_path / "plain").write_bytes(b"x")  # what open() makes under the same umask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.json", "a.png", "plain"]


def test_an_overwrite_replaces_the_whole_file(tmp_path):
    atomic_write_bytes(tmp_path / "a", b"old contents")
    atomic_write_bytes(tmp_path / "a", b"new")
    assert (tmp_path / "a").read_bytes() == b"new" and os.listdir(tmp_path) == ["a"]
