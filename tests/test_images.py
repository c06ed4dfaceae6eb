"""Single-image decoding and encoding: exact round trips, typed one-line errors for bad files."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from hipgen.data.dicom import write_synthetic_dicom
from hipgen.data.imagefolder import ImageFolderWriter
from hipgen.data.images import (
    PROVENANCE_MAX_CHARS,
    Provenance,
    decode_image_bytes,
    encode_jpeg,
    encode_png,
    read_image,
    synthetic_provenance,
    to_uint,
    write_atomic,
)
from hipgen.data.record import LabelRecord
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


# --- the synthetic marker read back -----------------------------------------------------------------
def _record(name: str, **provenance) -> LabelRecord:
    return LabelRecord(
        file_name=name,
        text="",
        na_left=100.0,
        na_right=110.0,
        left_head_x=30.0,
        left_head_y=20.0,
        right_head_x=10.0,
        right_head_y=20.0,
        left_rim_x=35.0,
        left_rim_y=12.0,
        right_rim_x=5.0,
        right_rim_y=12.0,
        left_radius=4.0,
        right_radius=4.0,
        class_left="small",
        class_right="big",
        grade_left="C",
        grade_right="A",
        **provenance,
    )


def test_synthetic_provenance_of_the_imagefolder_writers_png(tmp_path):
    writer = ImageFolderWriter(tmp_path, bits=16)
    writer.add(_record("a.png", synthetic=True, generator="phantom", model_version="v2", seed=7), PIXELS)
    writer.add(_record("real.png"), PIXELS)
    writer.close()
    assert synthetic_provenance(read_image(tmp_path / "a.png")) == Provenance(True, "phantom", "v2", 7)
    assert synthetic_provenance(read_image(tmp_path / "real.png")) is None
    marker = synthetic_provenance(read_image(tmp_path / "a.png"))
    assert marker is not None and marker.as_fields() == {
        "synthetic": True,
        "generator": "phantom",
        "model_version": "v2",
        "seed": 7,
    }


def test_synthetic_provenance_of_a_synthetic_dicom(tmp_path):
    p = tmp_path / "x.dcm"
    write_synthetic_dicom(
        p, PIXELS, record=None, generator="phantom", model_version="m1", seed=2**63, pixel_spacing_mm=None
    )
    assert synthetic_provenance(read_image(p)) == Provenance(True, "phantom", "m1", 2**63)


def test_plain_png_and_jpeg_carry_no_provenance():
    assert synthetic_provenance(decode_image_bytes(encode_png(PIXELS), source="p.png")) is None
    assert synthetic_provenance(decode_image_bytes(encode_jpeg(PIXELS), source="p.jpg")) is None


@pytest.mark.parametrize(
    ("seed", "kept"), [("12", 12), (" 5 ", 5), ("-1", None), (str(2**64), None), ("x1", None), ("", None)]
)
def test_synthetic_provenance_is_checked_like_untrusted_input(seed, kept):
    text = {"hipgen:synthetic": "TRUE", "hipgen:generator": "g" * 500, "hipgen:seed": seed}
    marker = synthetic_provenance(decode_image_bytes(encode_png(PIXELS, text=text), source="t.png"))
    assert marker is not None and marker.seed == kept and marker.model_version is None
    assert marker.generator == "g" * PROVENANCE_MAX_CHARS
    assert "seed" not in marker.as_fields() if kept is None else marker.as_fields()["seed"] == kept


def test_a_false_synthetic_flag_is_no_marker():
    text = {"hipgen:synthetic": "false", "hipgen:generator": "phantom"}
    assert synthetic_provenance(decode_image_bytes(encode_png(PIXELS, text=text), source="f.png")) is None
