"""What a reader-study browser receives: a fresh PNG with the pixels and nothing of the source file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from hipgen.data.dicom import synthetic_dicom_bytes
from hipgen.data.images import decode_image_bytes, encode_jpeg, encode_png, to_uint
from hipgen.review.display import display_png, display_size, list_images, png_chunk_types

CLEAN = ["IHDR", "IDAT", "IEND"]
SECRET = "Quixote^Dulcinea"


def _ramp(h: int = 48, w: int = 64) -> np.ndarray:
    """A horizontal ramp with black and white margins wider than 0.5 % of the image, so the display's
    percentile window is the identity and the display must equal the pixels."""
    row = np.clip(np.linspace(-0.1, 1.1, w), 0.0, 1.0)
    return np.tile(row, (h, 1)).astype(np.float32)


def _decoded(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.mode == "L"
    return np.asarray(img).astype(int)


def _assert_clean(png: bytes, *secrets: str) -> None:
    assert [t for t in png_chunk_types(png) if t != "IDAT"] == ["IHDR", "IEND"]
    for s in secrets:
        assert s.encode() not in png


def _jpeg_with_exif(pixels: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x013B] = SECRET  # Artist
    buf = io.BytesIO()
    Image.fromarray(to_uint(pixels, 8)).save(
        buf, format="JPEG", quality=95, exif=exif.tobytes(), comment=f"patient {SECRET}".encode()
    )
    return buf.getvalue()


def _identified_dicom(pixels: np.ndarray, *, monochrome1: bool = False) -> bytes:
    """A DICOM with a patient's name and ID and a narrow window (stored values 25–75 % shown 0–1)."""
    raw = synthetic_dicom_bytes(
        pixels, record=None, generator="test", model_version="0", seed=1, pixel_spacing_mm=(0.1, 0.1)
    )
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.PatientName, ds.PatientID = SECRET, "PID-8812734"
    ds.WindowCenter, ds.WindowWidth = 32768, 32768
    if monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_png_text_chunks_are_dropped(tmp_path: Path) -> None:
    src = encode_png(_ramp(), text={"hipgen:synthetic": "true", "hipgen:generator": "ddpm-secret"})
    assert "tEXt" in png_chunk_types(src)  # the parser sees what the display must drop
    p = tmp_path / "a.png"
    p.write_bytes(src)
    out = display_png(p)
    _assert_clean(out.png, "hipgen", "ddpm-secret")
    assert (out.width, out.height, out.scale) == (64, 48, 1.0)
    assert np.array_equal(_decoded(out.png), to_uint(_ramp(), 8))


def test_16_bit_png_becomes_8_bit(tmp_path: Path) -> None:
    p = tmp_path / "a16.png"
    p.write_bytes(encode_png(_ramp(), bits=16))
    out = display_png(p)
    _assert_clean(out.png)
    assert np.abs(_decoded(out.png) - to_uint(_ramp(), 8)).max() <= 1


def test_jpeg_exif_and_comment_are_dropped(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    p.write_bytes(_jpeg_with_exif(_ramp()))
    assert SECRET.encode() in p.read_bytes() and b"SecretCam" in p.read_bytes()
    out = display_png(p)
    _assert_clean(out.png, SECRET, "SecretCam", "Exif")
    assert np.abs(_decoded(out.png) - to_uint(_ramp(), 8)).mean() < 4  # lossy


@pytest.mark.parametrize("monochrome1", [False, True])
def test_dicom_is_windowed_and_its_tags_are_dropped(tmp_path: Path, monochrome1: bool) -> None:
    p = tmp_path / "IM0001"  # no suffix: found by its DICM magic
    p.write_bytes(_identified_dicom(_ramp(), monochrome1=monochrome1))
    assert SECRET.encode() in p.read_bytes()
    out = display_png(p)
    _assert_clean(out.png, SECRET, "Quixote", "PID-8812734", "SYNTHETIC", "hipgen")
    expected = np.clip((_ramp() - 0.25) / 0.5, 0.0, 1.0)
    expected = 1.0 - expected if monochrome1 else expected
    assert np.abs(_decoded(out.png) - to_uint(expected, 8)).max() <= 2


def test_large_images_are_area_downscaled() -> None:
    pixels = np.tile(np.linspace(0.0, 1.0, 2000, dtype=np.float32), (1200, 1))
    out = display_png(pixels, max_side=500)
    _assert_clean(out.png)
    assert (out.width, out.height, out.scale) == (500, 300, 0.25)
    got = _decoded(out.png)
    assert got.shape == (300, 500)
    assert np.abs(got - to_uint(pixels[::4, 1::4], 8)).max() <= 2  # area mean of 4 columns of a ramp


def test_bytes_radiographs_and_pixels_are_accepted(tmp_path: Path) -> None:
    src = encode_png(_ramp(), text={"hipgen:synthetic": "true"})
    (tmp_path / "a.png").write_bytes(src)
    from_bytes = display_png(src).png
    assert from_bytes == display_png(decode_image_bytes(src, source="a.png")).png
    assert from_bytes == display_png(str(tmp_path / "a.png")).png
    _assert_clean(from_bytes, "hipgen")
    assert np.abs(_decoded(display_png(_ramp()).png) - _decoded(from_bytes)).max() <= 1


def test_display_size_never_enlarges() -> None:
    assert display_size(100, 50, 1024) == (100, 50, 1.0)
    assert display_size(4300, 3000, 1000)[:2] == (1000, 698)
    with pytest.raises(ValueError, match="max_side"):
        display_size(10, 10, 0)


def test_png_chunk_types_rejects_what_is_not_a_clean_png() -> None:
    png = display_png(_ramp()).png
    with pytest.raises(ValueError, match="signature"):
        png_chunk_types(b"GIF89a" + png)
    with pytest.raises(ValueError, match="truncated"):
        png_chunk_types(png[:-6])
    with pytest.raises(ValueError, match="after IEND"):
        png_chunk_types(png + b"hidden")


def test_list_images_skips_sidecars_hidden_and_non_images(tmp_path: Path) -> None:
    png, dcm = encode_png(_ramp()), _identified_dicom(_ramp())
    files = {
        "b.png": png,
        "a.JPG": encode_jpeg(_ramp()),
        "sub/c.dcm": dcm,
        "sub/IM0001": dcm,
        "manifest.json": b"{}",
        "labels.csv": b"file,angle\n",
        "metadata.jsonl": b"{}\n",
        "sub/extra.json": b"{}",
        "notes.txt": b"hello",
        "blob": b"x" * 200,
        ".hidden.png": png,
        ".cache/d.png": png,
        "sub/.b.png.1234.tmp": png,
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "sub/IM0001", "sub/c.dcm"]
    assert all(display_png(tmp_path / f).width == 64 for f in found)


def test_list_images_refuses_webdatasets_and_non_folders(tmp_path: Path) -> None:
    (tmp_path / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="hipgen convert"):
        list_images(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        list_images(tmp_path / "missing")
