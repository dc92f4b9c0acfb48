"""Detection against simulation truth: completeness, positions, and blends where truth has them."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from napari_deblend import detect, find_blends
from napari_deblend.simulate import simulate_field


def test_completeness_positions_and_blends_on_a_simulated_field():
    field, truth = simulate_field(size=1024, seed=11)
    cat, seg = detect(field)
    blends = find_blends(cat, seg)
    tx, ty, mag = (np.asarray(truth[c], float) for c in ("x", "y", "mag"))
    truth_tree = cKDTree(np.stack([tx, ty], axis=1))
    det = np.stack([np.asarray(cat["x"], float), np.asarray(cat["y"], float)], axis=1)
    det_tree = cKDTree(det)
    # isolated: no other galaxy within 4" (20 px) and away from the edges
    neighbours = truth_tree.query_ball_point(np.stack([tx, ty], axis=1), r=20.0)
    isolated = np.array([len(n) == 1 for n in neighbours])
    inside = (tx > 20) & (tx < 1003) & (ty > 20) & (ty < 1003)
    bright = isolated & inside & (mag < 24.0)
    assert bright.sum() > 50
    distance, nearest = det_tree.query(np.stack([tx[bright], ty[bright]], axis=1))
    found = distance < 2.0
    assert found.mean() >= 0.98, f"completeness {found.mean():.3f}"
    assert np.median(distance[found]) < 0.5
    # close bright pairs (0.6"-1.6" apart): both end in one blend, or in one merged detection
    pairs = truth_tree.query_pairs(r=8.0, output_type="ndarray")
    far = np.hypot(tx[pairs[:, 0]] - tx[pairs[:, 1]], ty[pairs[:, 0]] - ty[pairs[:, 1]]) > 3.0
    pairs = pairs[far & (mag[pairs[:, 0]] < 24) & (mag[pairs[:, 1]] < 24)]
    assert len(pairs) >= 3
    blend_id = np.asarray(cat["blend_id"])
    ok = 0
    for i, j in pairs:
        di = det_tree.query([tx[i], ty[i]])[1]
        dj = det_tree.query([tx[j], ty[j]])[1]
        ok += di == dj or (blend_id[di] > 0 and blend_id[di] == blend_id[dj])
    assert ok / len(pairs) >= 0.9
    assert len(blends) > 0
