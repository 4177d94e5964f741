"""The region pipeline keeps the object in place: a background edit's mask finds a small object
the map's hole missed, and strays in a background edit are painted out."""

from __future__ import annotations

import numpy as np

from retouch.edit import masks


def picture(background: tuple[int, int, int], objects: list[tuple[int, int, int, tuple[int, int, int]]]) -> np.ndarray:
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = background
    for x, y, side, colour in objects:
        image[y : y + side, x : x + side] = colour
    return image


def test_background_snap_finds_the_object_when_the_hole_misses_it():
    source = picture((40, 90, 220), [(40, 40, 12, (220, 40, 40))])
    coarse = np.ones((16, 16), bool)
    coarse[2:5, 2:5] = False  # the map's hole: a patch with nothing in it
    pixels = masks.snap_background(coarse, source, 4)
    assert not pixels[40:52, 40:52].any()  # the object is kept
    assert pixels[8:20, 8:20].all()  # the empty patch is edited
    assert pixels.sum() == 64 * 64 - 12 * 12


def test_background_snap_still_follows_the_hole():
    source = picture((40, 90, 220), [(8, 8, 12, (220, 40, 40)), (44, 44, 12, (240, 220, 40))])
    coarse = np.ones((16, 16), bool)
    coarse[2:5, 2:5] = False  # the hole points at the first object only
    pixels = masks.snap_background(coarse, source, 4)
    assert not pixels[8:20, 8:20].any() and pixels[44:56, 44:56].all()


def test_strays_in_a_background_edit_are_painted_out():
    edited = picture((50, 170, 70), [(10, 10, 8, (220, 40, 40)), (40, 40, 12, (220, 40, 40))])
    mask = np.ones((64, 64), bool)
    mask[40:52, 40:52] = False  # the kept object
    cleaned = masks.remove_strays(edited, mask)
    assert (cleaned[mask] == (50, 170, 70)).all()  # the second copy is gone
    assert (cleaned[~mask] == edited[~mask]).all()  # the kept object is untouched
    assert (edited[10:18, 10:18] == (220, 40, 40)).all()  # the input array is not modified


def test_a_textured_background_is_left_alone():
    rng = np.random.default_rng(0)
    edited = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.ones((64, 64), bool)
    assert (masks.remove_strays(edited, mask) == edited).all()
    assert (masks.remove_strays(edited, mask, masks.MaskConfig(stray_share=0)) == edited).all()


def test_a_recolour_keeps_the_outline_and_takes_the_drawn_colour():
    source = picture((40, 90, 220), [(20, 20, 16, (220, 40, 40))])
    source[20:36, 19] = (130, 65, 130)  # an anti-aliased column, half object, half background
    edited = picture((40, 90, 220), [(22, 23, 12, (240, 220, 40))])  # a smaller, shifted yellow blob
    coarse = np.zeros((64, 64), bool)
    coarse[16:40, 16:40] = True
    recolored, mask = masks.recolor_object(source, edited, coarse)
    assert (recolored[20:36, 20:36] == (240, 220, 40)).all()  # the whole old outline, in the new colour
    assert (recolored[~mask] == source[~mask]).all()  # nothing else moves
    assert np.abs(recolored[28, 19].astype(int) - (140, 155, 130)).max() <= 1  # the edge keeps its blend
    assert mask[20:36, 19:36].all() and not mask[:, :19].any()


def test_a_replaced_object_moves_back_to_the_old_place():
    source = picture((40, 90, 220), [(20, 20, 12, (220, 40, 40))])
    edited = picture((40, 90, 220), [(25, 23, 12, (240, 220, 40))])  # drawn 5 px right, 3 px down
    coarse = np.zeros((64, 64), bool)
    coarse[14:42, 14:42] = True
    moved = masks.align_object(source, edited, coarse)
    assert (moved[20:32, 20:32] == (240, 220, 40)).all()
    assert (moved[coarse & ~np.pad(np.ones((12, 12), bool), ((20, 32), (20, 32)))] == (40, 90, 220)).all()
    far = picture((40, 90, 220), [(2, 2, 6, (240, 220, 40))])  # beyond max_shift: left as drawn
    assert (masks.align_object(source, far, np.ones((64, 64), bool)) == far).all()


def test_the_report_warns_when_a_foreground_mask_dwarfs_its_object():
    from retouch.edit.api import mask_warnings
    from retouch.edit.layer import Composited

    source = picture((40, 90, 220), [(30, 30, 6, (220, 40, 40))])
    output = picture((40, 90, 220), [(30, 30, 6, (240, 220, 40))])
    tight, wide = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    tight[29:37, 29:37] = True
    wide[10:50, 10:50] = True
    for mask, warned in ((tight, False), (wide, True)):
        attempt = Composited(output, output, mask, mask.astype(float))
        assert bool(mask_warnings("foreground", source, attempt)) is warned
        assert mask_warnings("background", source, attempt) == []
    assert "1600 px" in mask_warnings("foreground", source, Composited(output, output, wide, wide.astype(float)))[0]


def test_a_replaced_shape_gets_its_bounding_box():
    """A triangle's mask, snapped to its outline, leaves out the corners a square needs; with
    ``box`` (a replacement, not a recolour) the whole bounding box is redrawn."""
    from retouch.worlds import shapes64

    triangle = shapes64.Scene("blue", "red", "triangle", "large", x0=14, y0=14)
    source = triangle.render()
    coarse = np.zeros((8, 8), bool)
    coarse[3:5, 3:5] = True  # the map lit the middle of the object only (latent cells of 8 px)
    outline = masks.snap_foreground(coarse, source, 8)
    boxed = masks.snap_foreground(coarse, source, 8, box=True)
    cells = np.zeros((8, 8), bool)
    cells[14 // 8 : (14 + 36 - 1) // 8 + 1, 14 // 8 : (14 + 36 - 1) // 8 + 1] = True  # the box's cells
    assert (boxed >= cells).all() and (boxed >= outline).all()
    assert not (outline >= cells).all()  # the outline alone misses a corner cell of the box
