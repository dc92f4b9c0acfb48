"""Deblenders: the protocol and registry (``base``) and one module per family."""

from .base import (
    BUILTIN_DEBLENDERS,
    ENTRY_POINT_GROUP,
    Deblender,
    DeblendError,
    DeblendResult,
    available_deblenders,
    available_devices,
    get_deblender,
    resolve_device,
)

__all__ = [
    "BUILTIN_DEBLENDERS",
    "ENTRY_POINT_GROUP",
    "DeblendError",
    "DeblendResult",
    "Deblender",
    "available_deblenders",
    "available_devices",
    "get_deblender",
    "resolve_device",
]
