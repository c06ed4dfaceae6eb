"""Inference backends (DESIGN §4): :func:`make_backend` picks the one the settings name.

``backend = "ort"`` (the default, ``HIPGEN_BACKEND=ort``): ONNX Runtime in-process over
``settings.model_repository``. ``backend = "triton"``: a Triton server at ``settings.triton_url``
(``HIPGEN_TRITON_URL``), serving a repository written by ``python -m hipgen.inference.triton_repo``.
Imports stay lazy so that importing this package loads neither ONNX Runtime nor the Triton client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hipgen.inference.backend import Backend
    from hipgen.settings import Settings


def make_backend(settings: Settings) -> Backend:
    """The inference backend ``settings.backend`` names (``ort`` or ``triton``)."""
    if settings.backend == "triton":
        from hipgen.inference.triton import TritonBackend

        return TritonBackend(settings.triton_url)
    if settings.backend == "ort":
        from hipgen.inference.backend import OrtBackend

        return OrtBackend(
            settings.model_repository, max_concurrent_runs=settings.ort_max_concurrent_runs or None
        )
    raise ValueError(f"unknown inference backend {settings.backend!r}; one of ort, triton")
