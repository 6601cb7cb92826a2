"""DICOM files built in the test with pydicom, the way clinic devices write them, plus broken ones.

Every file carries the same identifying header fields (``IDENTIFYING``) so a test can look for
them everywhere the ingestion writes to and prove none survives.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
OP_16BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
OPT = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
MPEG2 = "1.2.840.10008.1.2.4.100"

IDENTIFYING = {
    "PatientName": "Doe^Jane^Q",
    "PatientBirthDate": "19470312",
    "PatientAddress": "12 Harbour Lane",
    "InstitutionName": "St Elsewhere Eye Clinic",
    "ReferringPhysicianName": "Kildare^James",
    "OtherPatientIDs": "NHS-998877",
    "AccessionNumber": "ACC-55521",
}
PRIVATE_NAME = "Roe^Richard^Private"
"""Written into a private tag: a device's own copy of the name."""


def fundus_pixels(seed: int, size: int = 48, *, bits: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 2**bits, size=(size, size + 8, 3), dtype=np.uint16 if bits > 8 else np.uint8)
    return arr


def smooth_fundus(size: int = 48) -> np.ndarray:
    """A smooth reddish disc on dark ground: JPEG keeps it closely, so colour handling can be checked."""
    yy, xx = np.mgrid[0:size, 0 : size + 8]
    disc = np.clip(1.0 - np.hypot(yy - size / 2, xx - size / 2) / (size / 2), 0, 1)
    return (np.stack([200 * disc + 20, 90 * disc + 10, 40 * disc + 5], axis=-1)).astype(np.uint8)


def oct_volume(seed: int, frames: int = 3, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(frames, size, size + 4), dtype=np.uint8)


def dicom_bytes(
    pixels: np.ndarray | None,
    *,
    sop_class: str = OP_8BIT,
    patient_id: str = "MRN-4711",
    laterality: str | None = "R",
    photometric: str | None = None,
    jpeg: bool = False,
    transfer_syntax: str | None = None,
    frames_declared: int | None = None,
    acquired: str = "20240315093000",
    sop_instance_uid: str | None = None,
    private_name: bool = True,
    bits_stored: int | None = None,
) -> bytes:
    """A Part 10 file; ``pixels`` is (H, W, 3) or (H, W) for one frame, (F, H, W) for a volume."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = transfer_syntax or (JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    if private_name:
        block = ds.private_block(0x0099, "ACME OPHTHALMIC", create=True)
        block.add_new(0x01, "PN", PRIVATE_NAME)
    ds.Modality = "OPT" if sop_class == OPT else "OP"
    if laterality:
        ds.ImageLaterality = laterality
    ds.AcquisitionDateTime = acquired
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if pixels is not None:
        volume = sop_class == OPT or (pixels.ndim == 3 and pixels.shape[-1] != 3)
        colour = pixels.ndim == 3 and pixels.shape[-1] == 3
        ds.Rows, ds.Columns = pixels.shape[1:3] if volume else pixels.shape[:2]
        ds.SamplesPerPixel = 3 if colour else 1
        ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
        bits = 16 if pixels.dtype == np.uint16 else 8
        ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
        ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
        if colour:
            ds.PlanarConfiguration = 0
        if volume:
            ds.NumberOfFrames = frames_declared or pixels.shape[0]
        if jpeg:
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
            ds.PixelData = encapsulate([buffer.getvalue()])
            ds.PhotometricInterpretation = "YBR_FULL_422"
        elif transfer_syntax == MPEG2:
            ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
        else:
            ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom_folder(root: Path) -> dict[str, bytes]:
    """A clinic export: good photos and a volume, labels in ``labels.csv``, and hostile files."""
    uid_op, uid_opt = generate_uid(), generate_uid()
    good = {
        "op_rgb.dcm": dicom_bytes(fundus_pixels(1), sop_instance_uid=uid_op),
        "op_jpeg.dcm": dicom_bytes(smooth_fundus(), jpeg=True, patient_id="MRN-0815", laterality="L"),
        "op_mono16.dcm": dicom_bytes(
            fundus_pixels(3, bits=12)[..., 0].astype(np.uint16),
            sop_class=OP_16BIT,
            bits_stored=12,
            laterality=None,
        ),
        "IMG0004": dicom_bytes(oct_volume(4), sop_class=OPT, sop_instance_uid=uid_opt),
    }
    full = dicom_bytes(fundus_pixels(5))
    hostile = {
        "truncated.dcm": full[: len(full) // 2],
        "nopixels.dcm": dicom_bytes(None),
        "lying_frames.dcm": dicom_bytes(oct_volume(6), sop_class=OPT, frames_declared=9),
        "ct.dcm": dicom_bytes(fundus_pixels(7)[..., 0], sop_class=CT),
        "mpeg.dcm": dicom_bytes(fundus_pixels(8), transfer_syntax=MPEG2),
        "notdicom.dcm": b"just some text, not a DICOM file at all" * 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, data in {**good, **hostile}.items():
        (root / name).write_bytes(data)
    (root / "labels.csv").write_text(
        f"sop_instance_uid,patient_id,eye,label\n{uid_op},,,3\n{uid_opt},,,CNV\n,MRN-0815,OS,1\n"
    )
    return {**good, **hostile}
