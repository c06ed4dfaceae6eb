"""hipgen.data.dicom: reading real DICOM files (pydicom's own test corpus), writing synthetic files,
de-identification, and typed refusals of bad input."""

from __future__ import annotations

import importlib.metadata
import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from hipgen.data import dicom
from hipgen.data.dicom import (
    deidentify,
    deidentify_file,
    dicom_summary,
    read_dicom,
    read_synthetic_labels,
    write_synthetic_dicom,
)
from hipgen.data.record import LabelRecord
from hipgen.errors import CorruptFileError, ImageTooLargeError, InputError, UnsupportedImageError

# pydicom's get_testdata_file(s) try to download and stall offline: find the folders directly.
PYDICOM_DATA = Path(pydicom.__file__).parent / "data"
TEST_FILES = PYDICOM_DATA / "test_files"
EXTRA_DATA = Path(str(importlib.metadata.distribution("pydicom-data").locate_file("data_store/data")))
CORPUS = sorted(
    [("pydicom", p) for p in PYDICOM_DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    + [("pydicom-data", p) for p in EXTRA_DATA.rglob("*") if p.is_file()]
)


def _id(item: tuple[str, Path]) -> str:
    root = PYDICOM_DATA if item[0] == "pydicom" else EXTRA_DATA
    return f"{item[0]}/{item[1].relative_to(root)}"


def _assert_one_line_naming(err: InputError, path: Path | str) -> None:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg, msg


def _assert_radiograph(pixels: np.ndarray) -> None:
    assert pixels.dtype == np.float32 and pixels.ndim == 2 and pixels.size > 0
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0


# --- the sweep --------------------------------------------------------------------------------------
@pytest.mark.parametrize("item", CORPUS, ids=[_id(i) for i in CORPUS])
def test_every_corpus_file_reads_or_is_refused_with_a_typed_error(item: tuple[str, Path]) -> None:
    path = item[1]
    try:
        rad = read_dicom(path)
    except InputError as e:
        _assert_one_line_naming(e, path)
        return
    _assert_radiograph(rad.pixels)
    assert rad.format == "dicom" and rad.source == str(path)


MUST_READ = [
    TEST_FILES / n
    for n in (
        "MR_small.dcm",
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "JPEG2000.dcm",
        "JPGExtended.dcm",
        "JPEGLSNearLossless_16.dcm",
        "image_dfl.dcm",
        "dicomdirtests/77654033/CR1/6154",
    )
] + [EXTRA_DATA / n for n in ("JPEG-LL.dcm", "RG1_J2KR.dcm", "RG3_J2KI.dcm", "mlut_18.dcm", "vlut_04.dcm")]


def test_sweep_reads_the_grey_scale_images() -> None:
    """Baseline, extended, lossless and JPEG-LS JPEG, JPEG 2000, RLE, deflate, big endian, implicit VR."""
    for path in MUST_READ:
        _assert_radiograph(read_dicom(path).pixels)
    read = 0
    for _, path in CORPUS:
        try:
            read_dicom(path)
            read += 1
        except InputError:
            pass
    assert read >= 80, read  # 88 with pydicom 3.0 + pydicom-data 1.0


LOSSLESS_PAIRS = (
    [
        (TEST_FILES / "MR_small.dcm", TEST_FILES / n)
        for n in (
            "MR_small_RLE.dcm",
            "MR_small_jp2klossless.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_bigendian.dcm",
            "MR_small_expb.dcm",
            "MR_small_implicit.dcm",
        )
    ]
    + [(EXTRA_DATA / f"{s}_UNCR.dcm", EXTRA_DATA / f"{s}_J2KR.dcm") for s in ("693", "MR2", "RG1", "RG3")]
    + [
        (EXTRA_DATA / "JPEG2000_UNC.dcm", TEST_FILES / "JPEG2000.dcm"),
        (TEST_FILES / "rtdose_1frame.dcm", TEST_FILES / "rtdose_rle_1frame.dcm"),
    ]
)
# *_UNCI holds the decoded irreversible (lossy) stream, so a decoder may differ by rounding only
LOSSY_PAIRS = [(EXTRA_DATA / "693_UNCI.dcm", TEST_FILES / "693_J2KI.dcm")] + [
    (EXTRA_DATA / f"{s}_UNCI.dcm", EXTRA_DATA / f"{s}_J2KI.dcm") for s in ("MR2", "RG1", "RG3")
]


@pytest.mark.parametrize(
    ("ref", "other", "tol"),
    [(a, b, 1e-6) for a, b in LOSSLESS_PAIRS] + [(a, b, 2e-3) for a, b in LOSSY_PAIRS],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_compressed_files_match_their_uncompressed_counterpart(ref: Path, other: Path, tol: float) -> None:
    a, b = read_dicom(ref), read_dicom(other)
    assert a.pixels.shape == b.pixels.shape
    assert float(np.abs(a.pixels - b.pixels).max()) <= tol
    assert a.pixel_spacing_mm == b.pixel_spacing_mm


CR_MONO1 = TEST_FILES / "dicomdirtests/77654033/CR1/6154"


@pytest.mark.parametrize("path", [EXTRA_DATA / "RG1_UNCR.dcm", CR_MONO1], ids=lambda p: p.name)
def test_monochrome1_is_inverted_so_bone_is_bright(path: Path) -> None:
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = ds.pixel_array.astype(np.float64).ravel()
    r = np.corrcoef(raw, read_dicom(path).pixels.astype(np.float64).ravel())[0, 1]
    assert r < -0.99  # high stored value (dark on a MONOCHROME1 display) comes out dark


def test_imager_pixel_spacing_is_used_when_pixel_spacing_is_absent() -> None:
    path = CR_MONO1
    assert "PixelSpacing" not in pydicom.dcmread(path, stop_before_pixels=True)
    assert read_dicom(path).pixel_spacing_mm == (0.1, 0.1)


def test_reading_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom(TEST_FILES / "J2K_pixelrep_mismatch.dcm")  # pydicom warns about this one
        with pytest.raises(InputError):
            read_dicom(TEST_FILES / "badVR.dcm")
    assert capfd.readouterr().err == ""


# --- the display pipeline on hand-made files ----------------------------------------------------------
def _dataset(stored: np.ndarray, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.astype("<u2").tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _bytes(ds: Dataset) -> io.BytesIO:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return buf


def test_rescale_then_window_then_monochrome1() -> None:
    stored = np.array([[0, 100, 200], [300, 400, 4095]], dtype=np.uint16)
    ds = _dataset(stored, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=300, WindowWidth=401)
    got = read_dicom(_bytes(ds), source="hand.dcm").pixels
    hu = stored * 2.0 - 100
    want = np.clip((hu - 299.5) / 400 + 0.5, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_allclose(read_dicom(_bytes(ds), source="hand.dcm").pixels, 1 - want, atol=1e-6)


def test_min_max_when_there_is_no_window() -> None:
    stored = np.array([[100, 200], [300, 500]], dtype=np.uint16)
    got = read_dicom(_bytes(_dataset(stored)), source="hand.dcm").pixels
    np.testing.assert_allclose(got, (stored - 100) / 400.0, atol=1e-6)


# --- synthetic files -------------------------------------------------------------------------------
RECORD = LabelRecord(
    file_name="syn_0001.dcm",
    text="VD hip-extended radiograph of a dog, NA left 101.3, right 97.25 °",
    na_left=101.30000000000001,
    na_right=97.25,
    left_head_x=300.125,
    left_head_y=210.5,
    right_head_x=120.0,
    right_head_y=212.75,
    left_rim_x=330.3333333333333,
    left_rim_y=180.0,
    right_rim_x=90.1,
    right_rim_y=181.0,
    left_radius=24.5,
    right_radius=25.0,
    class_left="small",
    class_right="small",
    grade_left="C",
    grade_right="D",
    synthetic=True,
    generator="phantom",
    model_version="0.1.0",
    seed=2**40 + 7,
)


@pytest.mark.parametrize("bits", [16, 8])
def test_synthetic_round_trip(tmp_path: Path, bits: int) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.random((37, 53))
    pixels[0, 0], pixels[0, 1] = 0.0, 1.0
    path = tmp_path / "out" / "syn.dcm"
    write_synthetic_dicom(
        path,
        pixels,
        record=RECORD,
        generator="phantom",
        model_version="0.1.0",
        seed=RECORD.seed,
        pixel_spacing_mm=(0.139, 0.141),
        bits=bits,
        burned_in=False,
    )
    assert [p.name for p in path.parent.iterdir()] == ["syn.dcm"]  # no temp file left behind
    rad = read_dicom(path)
    step = 1 / (2**bits - 1)
    assert float(np.abs(rad.pixels - pixels).max()) <= step / 2 + 1e-6
    assert rad.pixel_spacing_mm == pytest.approx((0.139, 0.141))
    assert rad.metadata["ImageType"] == ["DERIVED", "SECONDARY"]
    assert rad.metadata["synthetic"] is True
    assert (rad.metadata["generator"], rad.metadata["model_version"], rad.metadata["seed"]) == (
        "phantom",
        "0.1.0",
        RECORD.seed,
    )
    assert read_synthetic_labels(path) == RECORD
    ds = pydicom.dcmread(path)
    assert ds.PatientName == "SYNTHETIC^PHANTOM" and ds.PatientID == "SYNTHETIC"
    assert ds.ImageComments.startswith("SYNTHETIC") and ds.ConversionType == "SYN"
    assert ds.BurnedInAnnotation == "NO" and ds.Manufacturer == "hipgen"
    unknown = tmp_path / "unknown.dcm"  # burned-in text not known (e.g. a converted image): left out
    write_synthetic_dicom(
        unknown,
        pixels,
        record=RECORD,
        generator="x",
        model_version="1",
        seed=None,
        pixel_spacing_mm=None,
        bits=bits,
    )
    assert "BurnedInAnnotation" not in pydicom.dcmread(unknown)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    summary = dicom_summary(path)
    assert summary["synthetic"] is True and summary["readable"] and summary["has_labels"]


def test_synthetic_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "plain.dcm"
    write_synthetic_dicom(
        path,
        np.zeros((4, 5)),
        record=None,
        generator="g",
        model_version="v",
        seed=None,
        pixel_spacing_mm=None,
    )
    assert read_synthetic_labels(path) is None
    assert read_dicom(path).pixel_spacing_mm is None
    assert read_synthetic_labels(TEST_FILES / "CT_small.dcm") is None


def test_synthetic_refuses_bad_pixels(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_synthetic_dicom(
            tmp_path / "x.dcm",
            np.full((2, 2), np.nan),
            record=None,
            generator="g",
            model_version="v",
            seed=0,
            pixel_spacing_mm=None,
        )


# --- de-identification -------------------------------------------------------------------------------
def _identified() -> Dataset:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "Rex^Good Boy", "PID-12345", "ACC-999"
    ds.InstitutionName, ds.OperatorsName, ds.ResponsiblePerson = "Vet Hospital North", "Smith^Jo", "Owner^Ann"
    ds.StudyDate, ds.PatientBirthDate, ds.StudyTime = "20240102", "20200304", "101112"
    ds.ImageComments = "Rex, left hip sore"
    ds.add_new(0x0009_1001, "LO", "private secret")
    ds.add_new(0x6000_0010, "US", 4)  # overlay group
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ref.PerformingPhysicianName = "Doe^Jane"
    ds.ReferencedImageSequence = [ref]
    return ds


def test_deidentify_removes_identifiers_and_remaps_uids() -> None:
    ds = _identified()
    out = deidentify(ds, salt="s1")
    assert ds.PatientName == "Rex^Good Boy"  # input untouched
    text = str(out)
    for secret in (
        "Rex",
        "PID-12345",
        "ACC-999",
        "Vet Hospital",
        "Smith",
        "Owner",
        "Doe",
        "private secret",
        "20240102",
        "20200304",
    ):
        assert secret not in text, secret
    assert out.PatientName == "" and out.StudyDate == "" and "ImageComments" not in out
    assert out.PatientID.startswith("ANON-")
    assert not any(e.tag.is_private for e in out.iterall())
    assert not any(0x6000 <= e.tag.group <= 0x60FF for e in out)
    assert out.PatientIdentityRemoved == "YES" and "PS3.15" in out.DeidentificationMethod
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert out[kw].value != ds[kw].value and out[kw].value.startswith("2.25.")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out.SOPInstanceUID  # consistent
    assert out.SOPClassUID == out.ReferencedImageSequence[0].ReferencedSOPClassUID == ds.SOPClassUID
    again, other = deidentify(ds, salt="s1"), deidentify(ds, salt="s2")
    assert again.SOPInstanceUID == out.SOPInstanceUID and again.PatientID == out.PatientID
    assert other.SOPInstanceUID != out.SOPInstanceUID and other.PatientID != out.PatientID


def test_deidentify_refuses_burned_in_annotation_unless_allowed() -> None:
    ds = _identified()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(InputError, match="BurnedInAnnotation"):
        deidentify(ds, salt="s")
    assert deidentify(ds, salt="s", allow_burned_in=True).BurnedInAnnotation == "YES"


def test_deidentify_file_keeps_pixels(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.dcm", tmp_path / "out" / "anon.dcm"
    _identified().save_as(src, enforce_file_format=True)
    deidentify_file(src, dst, salt="k")
    raw = dst.read_bytes()
    assert b"Rex" not in raw and b"PID-12345" not in raw and b"Owner" not in raw
    np.testing.assert_array_equal(read_dicom(dst).pixels, read_dicom(src).pixels)
    # compressed pixel data are copied as they are
    deidentify_file(TEST_FILES / "MR_small_jp2klossless.dcm", tmp_path / "j2k.dcm", salt="k")
    np.testing.assert_array_equal(
        read_dicom(tmp_path / "j2k.dcm").pixels, read_dicom(TEST_FILES / "MR_small.dcm").pixels
    )


# --- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cut"),
    [
        ("MR_small.dcm", 200),
        ("MR_small.dcm", 3000),
        ("CT_small.dcm", 3000),
        ("CT_small.dcm", 1500),
        ("MR_small.dcm", -200),
    ],
)
def test_truncated_file(tmp_path: Path, name: str, cut: int) -> None:
    data = (TEST_FILES / name).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:cut])
    with pytest.raises(CorruptFileError) as ei:
        read_dicom(path)
    _assert_one_line_naming(ei.value, path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CorruptFileError) as ei:
        read_dicom(path)
    _assert_one_line_naming(ei.value, path)


@pytest.mark.parametrize(
    ("path", "err", "words"),
    [
        (TEST_FILES / "MR_small.dcm", ImageTooLargeError, "cap"),
        (EXTRA_DATA / "emri_small.dcm", UnsupportedImageError, "multi-frame"),
        (EXTRA_DATA / "SC_rgb.dcm", UnsupportedImageError, "colour"),
        (EXTRA_DATA / "OBXXXX1A.dcm", UnsupportedImageError, "PALETTE COLOR"),
        (TEST_FILES / "rtplan.dcm", UnsupportedImageError, "no pixel data"),
        (TEST_FILES / "test-SR.dcm", UnsupportedImageError, "no pixel data"),
        (TEST_FILES / "dicomdirtests" / "DICOMDIR", UnsupportedImageError, "DICOMDIR"),
    ],
    ids=lambda v: getattr(v, "name", getattr(v, "__name__", str(v))),
)
def test_refusals(path: Path, err: type[InputError], words: str) -> None:
    with pytest.raises(err, match=words) as ei:
        read_dicom(path, pixel_cap=1000)  # MR_small is 64 x 64 = 4096 pixels
    _assert_one_line_naming(ei.value, path)


def test_cap_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(dicom, "pixel_array", boom)
    with pytest.raises(ImageTooLargeError):
        read_dicom(EXTRA_DATA / "RG1_J2KR.dcm", pixel_cap=1_000_000)


def test_deflated_data_set_is_refused_before_it_inflates_past_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deflated data set that inflates far beyond one frame at the cap (a decompression bomb: 32 MB of
    zeros in a private element, ~32 KB on the wire) is refused, never inflated whole by pydicom; the same
    image without the padding reads at the same cap."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    stored = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 4096
    ds = _dataset(stored)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    plain = _bytes(ds).getvalue()
    ds.add_new(0x00090010, "LO", "FUZZ")
    ds.add_new(0x00091000, "OB", bytes(32 * 2**20))
    bomb = _bytes(ds).getvalue()
    assert len(bomb) < 2**20 < dicom.inflate_limit(64 * 64) < 32 * 2**20

    inflated: list[int] = []
    real_decompress = dicom.zlib.decompress

    def spy(data: bytes, *args: object) -> bytes:  # pydicom inflates with zlib.decompress, whole
        out = real_decompress(data, *args)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(pydicom.filereader.zlib, "decompress", spy)
    np.testing.assert_allclose(read_dicom(io.BytesIO(plain), pixel_cap=64 * 64).pixels.shape, (64, 64))
    with pytest.raises(ImageTooLargeError, match="decompression bomb") as ei:
        read_dicom(io.BytesIO(bomb), source="bomb.dcm", pixel_cap=64 * 64)
    _assert_one_line_naming(ei.value, "bomb.dcm")
    assert max(inflated) < 2**20  # only the plain file was inflated by pydicom
    assert read_dicom(io.BytesIO(bomb)).pixels.shape == (64, 64)  # within the default cap's limit


@pytest.mark.timeout(60)
@pytest.mark.parametrize("trailing", [b"", b"\0", b"\0" * 3])
def test_deflate_check_ends_at_the_stream_end_whatever_follows(trailing: bytes) -> None:
    """Bytes after the deflate stream (pydicom pads an odd-length data set with one) are left unconsumed
    by zlib; the check stops at the stream's end instead of feeding them again for ever (it hung on
    every file whose deflated stream had such a tail)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _dataset(np.zeros((8, 8), np.uint16))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new(0x00091000, "OB", bytes(8 * 2**20))  # inflates over several 4 MiB output chunks
    data = _bytes(ds).getvalue() + trailing
    dicom._refuse_deflate_bomb(io.BytesIO(data), "tail.dcm", limit=2**30)  # returns: under the limit
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        dicom._refuse_deflate_bomb(io.BytesIO(data), "tail.dcm", limit=2**20)


def test_undecodable_transfer_syntax_names_syntax_and_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _dataset(np.zeros((2, 2), np.uint16))
    buf = _bytes(ds)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has no decoder
    with pytest.raises(UnsupportedImageError, match="MPEG2") as ei:
        dicom._check_image(ds, "mpeg.dcm", 10**6)
    _assert_one_line_naming(ei.value, "mpeg.dcm")

    class Missing:
        is_available = False
        missing_dependencies = ["pyjpegls - requires numpy and pyjpegls>=1.2"]

    monkeypatch.setattr(dicom, "get_decoder", lambda uid: Missing())
    with pytest.raises(UnsupportedImageError, match="pyjpegls") as ei:
        read_dicom(buf, source="jls.dcm")
    _assert_one_line_naming(ei.value, "jls.dcm")


def test_summary_is_non_identifying() -> None:
    s = dicom_summary(TEST_FILES / "CT_small.dcm")
    assert s["readable"] and s["synthetic"] is False and s["TransferSyntax"] == "Explicit VR Little Endian"
    assert s["pixel_spacing_mm"] == (0.661468, 0.661468)
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    for secret in (str(ds.PatientName), ds.PatientID, ds.StudyDate):
        assert secret not in str(s)
    rgb = dicom_summary(EXTRA_DATA / "SC_rgb.dcm")
    assert not rgb["readable"] and "colour" in rgb["refusal"]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPGExtended.dcm",
        "image_dfl.dcm",
    ],
)
def test_damaged_bytes_only_ever_raise_input_errors(name: str) -> None:
    """A few hundred random byte flips and cuts: decoders and the parser must never leak their own
    exceptions (pylibjpeg-rle even panics on some corrupt RLE streams)."""
    data = (TEST_FILES / name).read_bytes()
    rng = np.random.default_rng(7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(60):
            b = bytearray(data)
            for i in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[i] = int(rng.integers(0, 256))
            if rng.random() < 0.3:
                b = b[: int(rng.integers(0, len(b)))]
            try:
                _assert_radiograph(read_dicom(io.BytesIO(bytes(b)), source="damaged.dcm").pixels)
            except InputError as e:
                _assert_one_line_naming(e, "damaged.dcm")
