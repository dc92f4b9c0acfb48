"""Exceptions raised for bad input.

Every error a user can cause derives from :class:`DeblendInputError`, a
``ValueError`` whose message names the file, HDU or parameter at fault and what
was expected.  The CLI prints that message on one line and exits non-zero;
the napari widgets show it as a notification.
"""

from __future__ import annotations


class DeblendInputError(ValueError):
    """Bad input from a user: a file, HDU, parameter or array we cannot use."""


class FieldReadError(DeblendInputError):
    """A FITS file (or array) cannot be turned into a :class:`~napari_deblend.field.Field`."""


class DetectionError(DeblendInputError):
    """Detection cannot run, or found nothing, on the given field."""


class Terminated(BaseException):  # noqa: N818 (like KeyboardInterrupt: not an error of the input)
    """The process was asked to stop (SIGTERM): raised so that clean-up code runs on the way out."""
