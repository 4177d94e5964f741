"""The shapes-64 world against its spec: renderer, captions, edits and the oracle."""

import numpy as np
import pytest

from retouch.worlds import shapes64 as w


def test_oracle_reads_back_1000_random_scenes_without_a_miss():
    rng = np.random.default_rng(2024)
    scenes = [w.sample_scene(rng) for _ in range(1000)]
    accuracy = w.oracle_accuracy([s.render() for s in scenes], scenes)
    assert accuracy == {"shape": 1.0, "color": 1.0, "background": 1.0, "size": 1.0, "style": 1.0, "all": 1.0}


def test_render_follows_the_spec_pixel_by_pixel():
    scene = w.Scene("blue", "red", "square", "small", x0=10, y0=20)
    image = scene.render()
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == w.PALETTE["blue"]
    assert tuple(image[20, 10]) == w.PALETTE["red"] and tuple(image[39, 29]) == w.PALETTE["red"]
    assert tuple(image[40, 10]) == w.PALETTE["blue"] and tuple(image[20, 30]) == w.PALETTE["blue"]
    # a circle's edge pixels are anti-aliased: a mean of the 4x4 sub-pixels, rounded
    circle = w.Scene("black", "white", "circle", "large", x0=5, y0=5).render()
    edge = {tuple(p) for p in circle.reshape(-1, 3)} - {w.PALETTE["black"], w.PALETTE["white"]}
    assert edge and all(p[0] == p[1] == p[2] for p in edge)
    pastel = w.Scene("blue", "red", "square", "small", x0=10, y0=20, style="pastel").render()
    assert tuple(pastel[0, 0]) == (148, 173, 238)  # round(0.5 * c + 127.5), halves rounded up


def test_triangle_apex_up_and_star_point_up():
    tri = w.shape_coverage("triangle", 10, 10, 36)
    assert tri[11, 28] > 0 and tri[11, 12] == 0 and tri[45, 11] > 0  # narrow at the top, wide at the base
    star = w.shape_coverage("star", 10, 10, 36)
    assert star[11, 28] > 0 and star[11, 12] == 0 and star[28, 28] == 1.0


@pytest.mark.parametrize(
    ("scene", "text"),
    [
        (w.Scene("blue", "red", "circle", "large", 4, 4), "a large red circle on a blue background"),
        (w.Scene("orange", "white", "cross", "small", 4, 4, "pastel"),
         "a small white cross on an orange background, pastel"),
    ],
)
def test_canonical_captions_round_trip(scene, text):
    assert scene.caption() == text
    fields = w.parse_caption(text)
    assert fields == {k: getattr(scene, k) for k in ("size", "color", "shape", "background", "style")}


def test_parse_caption_rejects_non_canonical_text():
    assert w.parse_caption("a large red circle on an blue background") is None
    assert w.parse_caption("a dog on a sofa") is None


@pytest.mark.parametrize("kind", ["background", "color", "shape", "size", "style"])
def test_edit_pairs_keep_every_field_but_the_edited_one(kind):
    rng = np.random.default_rng(7)
    for _ in range(50):
        pair = w.sample_edit(rng, kind)
        changed = {k for k in ("background", "color", "shape", "size", "style")
                   if getattr(pair.source, k) != getattr(pair.target, k)}
        assert changed == {kind}
        assert pair.source_caption != pair.target_caption
        assert pair.region == w.EDIT_REGION[kind]
        if kind == "size":
            assert pair.source.center == pair.target.center
        else:
            assert (pair.source.x0, pair.source.y0) == (pair.target.x0, pair.target.y0)
        # every pixel that changes lies inside the ground-truth edit mask
        diff = np.any(pair.source.render() != pair.target.render(), axis=-1)
        assert not np.any(diff & ~pair.mask)


def test_edit_masks_by_region():
    source = w.Scene("blue", "red", "circle", "small", 20, 20)
    bg = w.make_edit(source, "background", "green")
    assert bg.mask.sum() == (source.coverage() < 1).sum() and not bg.mask[30, 30]
    fg = w.make_edit(source, "shape", "square")
    assert fg.mask[20, 20] and fg.mask[30, 30] and not fg.mask[5, 5]


def test_bad_scenes_are_refused():
    with pytest.raises(ValueError, match="differ"):
        w.Scene("red", "red", "circle", "small", 4, 4)
    with pytest.raises(ValueError, match="lie in"):
        w.Scene("blue", "red", "circle", "large", 40, 4)
    with pytest.raises(ValueError, match="oracle"):
        w.read_scene(np.zeros((32, 32, 3), np.uint8))


def test_diamond_is_the_square_turned_45_degrees_with_vertices_at_the_side_midpoints():
    # 4x render of a 36 px box at (10, 10): S = 144, centre (112, 112); a sub-pixel belongs when
    # |dx| + |dy| <= 72 for its centre (X + 0.5, Y + 0.5)
    cov = w.shape_coverage("diamond", 10, 10, 36)
    big = np.arange(256) + 0.5
    px, py = np.meshgrid(big, big)
    expected = ((np.abs(px - 112) + np.abs(py - 112)) <= 72).reshape(64, 4, 64, 4).mean(axis=(1, 3))
    assert np.array_equal(cov, expected)
    assert cov[28, 28] == 1.0 and cov[10, 10] == 0.0 and cov[45, 45] == 0.0  # centre in, box corners out
    assert cov[10, 27] > 0 and cov[27, 10] > 0 and cov[45, 28] > 0  # the vertices touch the sides' midpoints
    assert abs(cov.sum() / (36 * 36 / 2) - 1) < 0.02  # half the box (the edge sub-pixels count whole)


def test_oracle_reads_reserved_shapes_only_when_asked():
    rng = np.random.default_rng(5)
    scenes = [w.sample_scene(rng, shapes=w.RESERVED_SHAPES) for _ in range(300)]
    images = [s.render() for s in scenes]
    assert w.oracle_accuracy(images, scenes, reserved=True)["all"] == 1.0
    assert {w.read_scene(i).shape for i in images} <= set(w.SHAPES)  # never a reserved shape unasked
    assert w.parse_caption("a large red diamond on a blue background")["shape"] == "diamond"
    assert w.WORLD.match(images[0], scenes[0].caption())["shape"]  # a reserved caption asks for them


def test_training_shapes_are_read_the_same_with_reserved_candidates():
    rng = np.random.default_rng(11)
    scenes = [w.sample_scene(rng) for _ in range(300)]
    assert w.oracle_accuracy([s.render() for s in scenes], scenes, reserved=True)["shape"] == 1.0
