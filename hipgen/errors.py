"""Typed errors for bad input.

Every error that a user's file can cause derives from :class:`InputError` and names the file, so a
folder reader can report or skip it and a service can map it to ``INVALID_ARGUMENT`` without a
traceback ever reaching the caller.
"""

from __future__ import annotations

from os import PathLike


class HipgenError(Exception):
    """Base of every error hipgen raises on purpose."""


class InputError(HipgenError, ValueError):
    """A file or value that hipgen cannot use. ``str(err)`` is one line: ``<source>: <reason>``."""

    def __init__(self, source: str | PathLike[str] | None, reason: str) -> None:
        self.source = str(source) if source is not None else None
        self.reason = reason
        super().__init__(f"{self.source}: {reason}" if self.source else reason)


class CorruptFileError(InputError):
    """The file is truncated or its bytes do not decode."""


class UnsupportedImageError(InputError):
    """The file decodes but is not a single-frame grey-scale radiograph (colour, multi-frame, no pixels)."""


class ImageTooLargeError(InputError):
    """The image would exceed the pixel cap (decompression-bomb guard)."""


class FieldError(HipgenError, ValueError):
    """A request or option value that cannot be used; ``field`` names it (a proto field path such as
    ``candidate.uri``, or an option), ``reason`` says why — what a service turns into a ``BadRequest``
    field violation."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class LabelError(InputError):
    """A label record is missing fields or holds values that make no sense."""
