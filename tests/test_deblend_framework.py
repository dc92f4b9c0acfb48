"""Deblender framework: registry, entry-point plugins, devices, the sextractor baseline, bad input."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from napari_deblend import available_deblenders, deblend, detect, find_blends
from napari_deblend.deblenders import DeblendError, DeblendResult, get_deblender, resolve_device
from napari_deblend.deblenders.base import masks_from_components
from napari_deblend.errors import DeblendInputError

from .conftest import gaussian_field


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A third-party package exposing a deblender through the entry-point group."""
    pkg = tmp_path / "tiny_deblender"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        import numpy as np
        from napari_deblend.deblenders.base import Deblender, DeblendResult

        class HalfHalf(Deblender):
            name = "halfhalf"
            description = "splits every stamp into two equal halves (a test plugin)"

            def deblend_batch(self, stamps, positions=None, noise=None):
                stamps = self.check_stamps(stamps)
                out = []
                for s in stamps:
                    comps = np.stack([s / 2, s / 2])
                    out.append(DeblendResult(blend=s, components=comps, positions=[[0, 0], [1, 1]], model=self.name))
                return out
    '''))
    dist = tmp_path / "tiny_deblender-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-deblender\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[napari_deblend.deblenders]\nhalfhalf = tiny_deblender:HalfHalf\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "halfhalf"
    sys.modules.pop("tiny_deblender", None)


def test_builtins_and_plugins_are_listed(plugin_package):
    names = available_deblenders()
    assert {"peeling", "sextractor", "halfhalf"} <= set(names)
    assert "test plugin" in names["halfhalf"]
    stamp = np.ones((1, 20, 20), np.float32)
    result = deblend(stamp, model="halfhalf")
    assert result.n_components == 2
    np.testing.assert_allclose(result.residual, 0.0)


def test_unknown_model_lists_known_ones():
    with pytest.raises(DeblendError, match="unknown deblender 'nope'.*peeling.*sextractor"):
        get_deblender("nope")


def test_devices():
    assert resolve_device("auto") in ("cuda", "mps", "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(DeblendError, match="not available on this machine.*cpu"):
        resolve_device("tpu")


def test_sextractor_baseline_on_field_blend(blend_field):
    cat, seg = detect(blend_field)
    blend = find_blends(cat, seg)[0]
    result = deblend(blend_field, blend, model="sextractor")
    assert isinstance(result, DeblendResult)
    assert result.n_components == 2
    assert result.blend_id == blend.id and not result.info["padded"]
    np.testing.assert_allclose(result.components.sum(0) + result.residual, result.blend, atol=1e-3)
    # components are the image times each segment: no pixel counted twice
    assert not (result.masks[0] & result.masks[1]).any()
    # positions in stamp pixels match the catalogue's
    y0, x0 = result.origin
    np.testing.assert_allclose(np.sort(result.positions[:, 1] + x0), np.sort(blend.positions[:, 1]), atol=0.5)
    assert 0.8 < result.info["flux_auto"][0] / 6e5 < 1.05


def test_a_background_is_subtracted_on_the_blends_stamp(blend_field):
    import dataclasses

    cat, seg = detect(blend_field)
    blend = find_blends(cat, seg)[0]
    yy, xx = np.indices(blend_field.data.shape[-2:])
    background = (50.0 + 0.2 * xx + 0.1 * yy)[None].astype(np.float32)  # a sloped sky
    with_sky = dataclasses.replace(blend_field, data=blend_field.data + background)
    result = deblend(with_sky, blend, model="sextractor", background=background)
    plain = deblend(blend_field, blend, model="sextractor")
    np.testing.assert_allclose(result.blend, plain.blend, atol=1e-2)
    np.testing.assert_allclose(result.components, plain.components, atol=1e-2)
    with pytest.raises(DeblendInputError, match="background has shape \\(1, 8, 8\\): expected the field's"):
        deblend(with_sky, blend, model="sextractor", background=np.zeros((1, 8, 8)))


def test_bare_stamp_bad_input():
    good = gaussian_field([(24, 24, 3e5, 2.0)], shape=(48, 48)).data
    assert deblend(good, model="sextractor").n_components == 1
    with pytest.raises(DeblendError, match="expected \\(H, W\\) or \\(C, H, W\\)"):
        deblend(np.zeros(10), model="sextractor")
    nan = good.copy()
    nan[0, 3, 3] = np.nan
    with pytest.raises(DeblendError, match="NaN"):
        deblend(nan, model="sextractor")
    with pytest.raises(DeblendError, match="too small"):
        deblend(np.ones((4, 4), np.float32), model="sextractor")


def test_masks_from_components():
    comps = np.zeros((2, 1, 4, 4), np.float32)
    comps[0, 0, :2] = 10
    comps[1, 0, 2:] = 5
    masks = masks_from_components(comps, noise=1.0)
    assert masks[0, :2].all() and masks[1, 2:].all() and not (masks[0] & masks[1]).any()
