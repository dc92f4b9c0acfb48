"""The optional dependencies: GalSim (``[sim]``) and Dask's distributed (``[batch]``).

The core works without them (every module imports; a field is read, detected, deblended and
measured), and a feature that needs one says which extra installs it in one sentence. A missing
package is made by putting ``None`` in ``sys.modules`` (Python's own way to make an import fail).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from napari_deblend._extras import EXTRAS, MissingExtraError, import_extra
from napari_deblend.errors import DeblendInputError
from napari_deblend.field import write_field

from .conftest import gaussian_field

BLOCK_EXTRAS = "import sys\nfor name in ('galsim', 'distributed'):\n    sys.modules[name] = None\n"


@pytest.mark.parametrize("name, extra", [("galsim", "sim"), ("distributed", "batch")])
def test_a_missing_extra_is_one_sentence_naming_the_extra(monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError) as caught:
        import_extra(name)
    message = str(caught.value)
    assert f'pip install "napari-deblend[{extra}]"' in message and EXTRAS[name][1] in message
    assert "\n" not in message
    assert isinstance(caught.value, DeblendInputError) and isinstance(caught.value, ImportError)


def test_run_on_a_dask_cluster_without_distributed_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    from napari_deblend.cli import main

    path = write_field(gaussian_field([(30, 30, 4e5, 2.0)], shape=(64, 64)), tmp_path / "f.fits")
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--dask-cluster", "local:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'napari-deblend[batch]' in err and "Traceback" not in err


def test_the_core_works_without_the_extras(tmp_path):
    """Every module imports, and a FITS field is read, detected, deblended (peeling) and measured."""
    field = gaussian_field([(40, 40, 4e5, 2.0), (100, 100, 6e5, 3.0), (100, 110, 3e5, 2.5)], shape=(160, 160))
    path = write_field(field, tmp_path / "field.fits")
    script = BLOCK_EXTRAS + textwrap.dedent(f"""
        import importlib, pkgutil
        import napari_deblend
        for module in pkgutil.walk_packages(napari_deblend.__path__, "napari_deblend."):
            importlib.import_module(module.name)
        from napari_deblend import read_field, detect, find_blends, deblend, measure
        field = read_field({str(path)!r})
        catalog, segmentation = detect(field)
        blends = find_blends(catalog, segmentation)
        assert len(blends) == 1, blends
        result = deblend(field, blends[0], model="peeling", device="cpu")
        table = measure(result)
        assert result.n_components >= 2 and len(table) == result.n_components
        assert sys.modules["galsim"] is None and sys.modules["distributed"] is None
        print("core ok", result.n_components)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "core ok" in done.stdout


def test_simulating_without_galsim_is_one_line_and_exit_2(tmp_path):
    script = BLOCK_EXTRAS + textwrap.dedent(f"""
        from napari_deblend.cli import main
        sys.exit(main(["simulate", "blends", "--n", "2", "-o", {str(tmp_path / "b.fits")!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1 and 'napari-deblend[sim]' in done.stderr
