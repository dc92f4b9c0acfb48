"""Text made safe for FITS header values, which hold printable ASCII only.

A file name such as ``champ_é.fits``, a labeller's login name or a note would
otherwise make astropy refuse the card (at the last step of a run).  Such
characters are written as Python escapes (``champ_\\xe9.fits``), so nothing is
lost; a value longer than a card becomes a long-string (``CONTINUE``) card, as
astropy does for any long string.  (Cards *read* from a file with non-ASCII
bytes need nothing: astropy replaces those bytes with ``?`` and warns.)
"""

from __future__ import annotations

from typing import Any


def header_text(value: Any) -> str:
    """``str(value)`` with every character outside printable ASCII written as its escape (``\\xe9``, ``\\n``, ``\\u2013``)."""
    text = str(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        char if char.isascii() and char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )
