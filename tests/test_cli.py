"""The ``napari-deblend`` command line: detect, and one-line errors with a non-zero exit."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from napari_deblend.cli import main
from napari_deblend.field import write_field

from .conftest import gaussian_field


def test_detect_writes_sextractor_catalogue_and_regions(tmp_path, capsys, blend_field):
    path = write_field(blend_field, tmp_path / "f.fits")
    out = tmp_path / "cat.ecsv"
    reg = tmp_path / "cat.reg"
    assert main(["detect", str(path), "-o", str(out), "--preset", "des", "--regions", str(reg)]) == 0
    line = capsys.readouterr().out
    assert "f.fits:" in line and "blends" in line
    cat = Table.read(out)
    for col in ("NUMBER", "X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "MAG_AUTO", "A_IMAGE", "THETA_IMAGE", "FLAGS", "BLEND_ID"):
        assert col in cat.colnames
    assert str(cat["FLUX_AUTO"].unit) == "electron" and str(cat["THETA_IMAGE"].unit) == "deg"
    # 1-based like SExtractor: the source at numpy (y=40, x=40) is at X_IMAGE = 41
    d = np.hypot(cat["X_IMAGE"] - 41, cat["Y_IMAGE"] - 41)
    assert d.min() < 0.3
    assert cat.meta["detection_preset"]["name"] == "des"
    text = reg.read_text().splitlines()
    assert text[0].startswith("# Region file format: DS9")
    assert sum(line.startswith("ellipse(") for line in text) == len(cat)
    assert sum("color=red" in line for line in text) == 2  # the two blend members
    # refuses to overwrite
    assert main(["detect", str(path), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bogus = tmp_path / "notfits.fits"
    bogus.write_text("hello, I am not a FITS file\n")
    assert main(["detect", str(bogus), "-o", str(tmp_path / "c.ecsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notfits.fits" in err[0] and "Traceback" not in err[0]
    blank = write_field(gaussian_field([], shape=(64, 64), noise=0.0), tmp_path / "zero.fits")
    assert main(["detect", str(blank), "-o", str(tmp_path / "c.ecsv"), "--back-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "zero.fits" in err[0]
    field = write_field(gaussian_field([(20, 20, 3e5, 2)], shape=(64, 64)), tmp_path / "small.fits")
    assert main(["detect", str(field), "-o", str(tmp_path / "c.ecsv"), "--back-size", "128"]) == 2
    assert "back_size=128" in capsys.readouterr().err


def test_a_reader_that_goes_away_stops_the_command_quietly(tmp_path, blend_field):
    """``napari-deblend detect ... | head -0``: the work is done, no error line, exit 141 as Unix tools give."""
    import subprocess
    import sys

    path = write_field(blend_field, tmp_path / "f.fits")
    out = tmp_path / "cat.ecsv"
    code = f"import sys; from napari_deblend.cli import main; sys.exit(main(['detect', {str(path)!r}, '-o', {str(out)!r}]))"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # nobody reads what it prints
    err = process.stderr.read().decode()
    process.wait()
    assert process.returncode == 141 and "error" not in err and "Traceback" not in err
    assert len(Table.read(out)) >= 4  # the catalogue was written before the line that could not be
