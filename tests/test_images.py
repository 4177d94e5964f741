"""load_image and atomic writes: clear errors and no half-written files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_bytes, atomic_write_json, remove_stale_temp_files
from retouch.io.images import load_image


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


def test_loads_and_converts(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (16, 16)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "image not found"),
        (b"", r"empty \(0 bytes\)"),
        (b"this is not an image", "corrupt or not an image"),
        (png_bytes()[:60], "corrupt or not an image"),  # truncated PNG
    ],
)
def test_bad_images_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RetouchError, match=message):
        load_image(path)


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(RetouchError, match="is a folder"):
        load_image(tmp_path)


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".g1.png.abc123.tmp").write_bytes(b"half")
    (tmp_path / "g1.json").write_text("{}")
    remove_stale_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["g1.json"]
