"""Single-image decoding and encoding: exact round trips, typed one-line errors for bad files."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from hipgen.data.images import decode_image_bytes, encode_jpeg, encode_png, read_image, to_uint, write_atomic
from hipgen.errors import CorruptFileError, ImageTooLargeError, InputError, UnsupportedImageError

RNG = np.random.default_rng(0)
PIXELS = RNG.random((40, 56), dtype=np.float32)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip_is_exact_at_its_bit_depth(tmp_path, bits):
    p = tmp_path / "x.png"
    p.write_bytes(encode_png(PIXELS, bits=bits, text={"hipgen:synthetic": "true"}))
    img = read_image(p)
    assert img.bit_depth == bits and img.format == "png" and img.pixels.dtype == np.float32
    assert np.array_equal(to_uint(img.pixels, bits), to_uint(PIXELS, bits))
    assert img.metadata["hipgen:synthetic"] == "true"


def test_jpeg_and_grey_saved_as_rgb_are_read_as_grey():
    jpg = decode_image_bytes(encode_jpeg(PIXELS, quality=95), source="x.jpg")
    assert jpg.format == "jpeg" and jpg.pixels.shape == PIXELS.shape
    assert np.abs(jpg.pixels - PIXELS).mean() < 0.06  # lossy
    rgb = np.repeat(to_uint(PIXELS, 8)[..., None], 3, axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    img = decode_image_bytes(buf.getvalue(), source="rgb.png")
    assert np.array_equal(to_uint(img.pixels, 8), to_uint(PIXELS, 8))


def _one_line(err: InputError, name: str) -> None:
    assert "\n" not in str(err) and name in str(err)


def test_colour_image_is_refused():
    rgb = (RNG.random((20, 20, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    with pytest.raises(UnsupportedImageError, match="colour") as e:
        decode_image_bytes(buf.getvalue(), source="photo.png")
    _one_line(e.value, "photo.png")


@pytest.mark.parametrize("cut", [20, 60, 200])
def test_truncated_png_is_corrupt(tmp_path, cut):
    data = encode_png(PIXELS, bits=16)
    p = tmp_path / "cut.png"
    p.write_bytes(data[:cut])
    with pytest.raises(CorruptFileError) as e:
        read_image(p)
    _one_line(e.value, "cut.png")


def test_non_image_and_missing_file(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("these are not pixels")
    with pytest.raises(UnsupportedImageError) as e:
        read_image(p)
    _one_line(e.value, "notes.png")
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "absent.png")


def test_pixel_cap_refuses_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    p.write_bytes(encode_png(PIXELS))
    with pytest.raises(ImageTooLargeError, match="exceeds the cap") as e:
        read_image(p, pixel_cap=100)
    _one_line(e.value, "big.png")
    monkeypatch.setenv("HIPGEN_MAX_IMAGE_PIXELS", "500")  # the settings reach the reader
    with pytest.raises(ImageTooLargeError):
        read_image(p)


def test_multi_frame_tiff_is_refused():
    frames = [Image.fromarray(to_uint(PIXELS, 8)) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImageError, match="multi-frame"):
        decode_image_bytes(buf.getvalue(), source="stack.tif")


def test_write_atomic_replaces_whole_files_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    write_atomic(p, b"first")
    write_atomic(p, b"second")
    assert p.read_bytes() == b"second"
    assert os.listdir(p.parent) == ["f.bin"]
