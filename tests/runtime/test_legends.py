"""Montage legends say what the colours mean: depth near/far, the semantic classes present, the flow wheel."""

from __future__ import annotations

import numpy as np

from stablemtl_edge.runtime import visualize as viz
from stablemtl_edge.tasks import PALETTE

H, W = 240, 320


def _tiles(preds, legends=True, tile_width=W):
    out = viz.montage(np.zeros((H, W, 3), np.uint8), preds, tile_width=tile_width, labels=False, legends=legends,
                      flow_max_radius=1.0)
    tw = tile_width
    th = out.shape[0] // viz.montage_layout(1 + len(preds), (round(tw * H / W), tw))[0]
    rows, cols = out.shape[0] // th, out.shape[1] // tw
    return out, [out[r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r in range(rows) for c in range(cols)]


def test_depth_bar_runs_from_near_to_far_colours():
    tile = viz.colorize_depth(np.full((H, W), 0.5, np.float32))
    viz.legend_depth(tile)
    row = tile[H - max(2, H // 40) - 1]
    bar = row[W // 4 : W - W // 4]
    np.testing.assert_array_equal(bar[0], viz.colorize_depth(np.zeros((1, 1), np.float32))[0, 0])  # near: warm
    np.testing.assert_array_equal(bar[-1], viz.colorize_depth(np.ones((1, 1), np.float32))[0, 0])  # far: cold


def test_flow_wheel_shows_the_colour_of_each_direction():
    tile = np.zeros((H, W, 3), np.uint8)
    viz.legend_flow(tile)
    r = max(6, min(H, W) // 7)
    margin = max(2, r // 4)
    cy, cx = H - margin - r, W - margin - r
    np.testing.assert_array_equal(tile[cy, cx], [255, 255, 255])  # no motion
    for (dy, dx), flow in (((0, 1), (1.0, 0.0)), ((1, 0), (0.0, 1.0)), ((0, -1), (-1.0, 0.0))):
        y, x = cy + int(dy * r * 0.8), cx + int(dx * r * 0.8)
        expected = viz.colorize_flow(np.array([[[flow[0] * 0.8, flow[1] * 0.8]]], np.float32), max_radius=1.0)[0, 0]
        assert np.abs(tile[y, x].astype(int) - expected.astype(int)).max() <= 12


def test_semantic_legend_lists_the_classes_present_only():
    ids = np.zeros((H, W), np.uint8)
    ids[: H // 2] = 6  # sky above road
    tile = np.full((H, W, 3), 77, np.uint8)  # a grey no class has
    viz.legend_semantic(tile, ids)
    colours = {tuple(int(v) for v in c) for c in tile.reshape(-1, 3)}
    assert tuple(int(v) for v in PALETTE[0]) in colours and tuple(int(v) for v in PALETTE[6]) in colours
    for absent in (1, 2, 3, 4, 5, 7):
        colour = tuple(int(v) for v in PALETTE[absent])
        if len(set(colour)) > 1:  # greys (building, pole) also occur in the anti-aliased white-on-black text
            assert colour not in colours
    _, tiles = _tiles({"semantic": ids})
    _, plain = _tiles({"semantic": ids}, legends=False)
    changed = np.any(tiles[1] != plain[1], axis=-1)
    assert changed.any() and not changed[: H // 3].any()  # in the montage the legend sits low in the tile


def test_legends_keep_the_tile_size_and_skip_tiny_tiles():
    preds = {"depth": np.random.default_rng(0).random((H, W), dtype=np.float32)}
    with_legend, _ = _tiles(preds)
    without, _ = _tiles(preds, legends=False)
    assert with_legend.shape == without.shape and (with_legend != without).any()
    small_with, _ = _tiles(preds, tile_width=40)
    small_without, _ = _tiles(preds, legends=False, tile_width=40)
    np.testing.assert_array_equal(small_with, small_without)
