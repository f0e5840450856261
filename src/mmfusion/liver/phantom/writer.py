"""Write the phantom to disk as PNG (or DICOM) pairs plus a ``manifest.csv`` (the default data set).

Layout (same format as real data, see :mod:`mmfusion.data.manifest`)::

    root/manifest.csv             patient_id,us_path,swe_path,stage,<ground-truth columns>
    root/phantom.json             generation parameters (seed, n_patients, config) and the
                                  fingerprint of the generator's source code
    root/P001/view1_us.png        grey B-mode
    root/P001/view1_swe.png       RGB SWE

With ``image_format="dicom"`` the images are ``view1_us.dcm`` / ``view1_swe.dcm`` instead: US Image
Storage objects (SOP class 1.2.840.10008.5.1.4.1.1.6.1) holding the very same pixels, compressed
losslessly (the first available of JPEG-LS Lossless, JPEG 2000 Lossless and RLE Lossless; with the
``mmfusion[dicom]`` plugins that is JPEG 2000 Lossless), B-mode as MONOCHROME2, SWE as RGB (YBR_RCT,
JPEG 2000's reversible colour transform, under JPEG 2000), with a Sequence of Ultrasound Regions
holding the visible fan's bounding box as a tissue region. UIDs derive from the seed, the
configuration, the patient and the view, so the files are byte-identical for any ``workers``.

The extra manifest columns hold each pair's ground truth (view stiffness, latents, SWE box, fan
geometry); :func:`phantom_truth` turns a manifest row back into a :class:`PhantomTruth`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from mmfusion.data.manifest import ManifestRow, write_manifest
from mmfusion.data.roi import detect_sector
from mmfusion.liver.phantom.cohort import PatientLatent
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.generator import LiverPhantom, PhantomTruth
from mmfusion.liver.phantom.geometry import SectorGeometry
from mmfusion.liver.stages import STAGE_NAMES

__all__ = ["generator_fingerprint", "make_phantom_dataset", "phantom_truth"]

MANIFEST_NAME = "manifest.csv"
PARAMS_NAME = "phantom.json"
_BOX = ("swe_x0", "swe_y0", "swe_x1", "swe_y1")
_GEOM = tuple(f.name for f in fields(SectorGeometry))
COLUMNS = (
    "patient_id", "us_path", "swe_path", "stage", "view", "stiffness_kpa",
    "latent_stiffness_kpa", "texture", "latent_texture", *_BOX, *_GEOM, "width", "height",
)  # fmt: skip


def _truth_columns(truth: PhantomTruth) -> dict[str, object]:
    geom = truth.geometry
    return {
        "view": truth.view,
        "stiffness_kpa": f"{truth.stiffness_kpa:.4f}",
        "latent_stiffness_kpa": f"{truth.latent_stiffness_kpa:.4f}",
        "texture": f"{truth.texture:.4f}",
        "latent_texture": f"{truth.latent_texture:.4f}",
        **dict(zip(_BOX, truth.swe_box, strict=True)),
        **{name: repr(float(getattr(geom, name))) for name in _GEOM},
        "width": truth.width,
        "height": truth.height,
    }


def phantom_truth(row: ManifestRow) -> PhantomTruth:
    """The ground truth of a phantom pair from its manifest row (sector, SWE box, latents).

    Args:
        row: A row of a manifest written by :func:`make_phantom_dataset`.

    Returns:
        The pair's :class:`PhantomTruth`; ``truth.swe_box`` is the colour box rectangle in frame
        pixels and ``truth.swe_box_in_crop(out_size)`` maps it into the model input.

    Raises:
        ValueError: If the row lacks the phantom's ground-truth columns.
    """
    missing = [c for c in COLUMNS[4:] if c not in row.extra]
    if missing:
        raise ValueError(
            f"row: expected the phantom ground-truth columns, line {row.line} lacks {missing}"
        )
    x = row.extra
    return PhantomTruth(
        patient_id=row.patient_id,
        view=int(x["view"]),
        stage=row.stage,
        stiffness_kpa=float(x["stiffness_kpa"]),
        latent_stiffness_kpa=float(x["latent_stiffness_kpa"]),
        texture=float(x["texture"]),
        latent_texture=float(x["latent_texture"]),
        swe_box=tuple(int(x[c]) for c in _BOX),  # type: ignore[arg-type]
        geometry=SectorGeometry(**{name: float(x[name]) for name in _GEOM}),
        width=int(x["width"]),
        height=int(x["height"]),
    )


def _write_png(path: Path, image: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"could not write {path}")


def _dicom_transfer_syntax() -> str:
    """The lossless transfer syntax UID of a DICOM phantom: the first one pydicom can encode.

    JPEG-LS Lossless (needs pyjpegls), JPEG 2000 Lossless (needs pylibjpeg-openjpeg), RLE Lossless
    (pydicom itself).
    """
    try:
        from pydicom.pixels import get_encoder
        from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
    except ImportError as error:
        raise ImportError(
            'image_format: writing a DICOM phantom needs pydicom >= 3: pip install "mmfusion[dicom]"'
        ) from error

    for uid in (JPEGLSLossless, JPEG2000Lossless):
        if get_encoder(uid).is_available:
            return str(uid)
    return str(RLELossless)


def _write_dicom(
    path: Path, image: np.ndarray, truth: PhantomTruth, modality: str, syntax: str, entropy: str
) -> None:
    """Write one frame as a lossless US Image Storage file with its sector as a tissue region."""
    from pydicom.dataset import Dataset
    from pydicom.uid import JPEG2000Lossless, UltrasoundImageStorage, generate_uid

    def uid(*parts: object) -> str:  # deterministic: same inputs, same UID
        return generate_uid(entropy_srcs=[entropy, truth.patient_id, *map(str, parts)])

    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = uid(modality, truth.view)
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series", modality)
    ds.PatientID = ds.PatientName = truth.patient_id
    ds.Modality = "US"
    ds.Manufacturer = "mmfusion"
    ds.ManufacturerModelName = "liver phantom"
    ds.SeriesDescription = "B-mode" if modality == "us" else "SWE"
    ds.SeriesNumber = 1 if modality == "us" else 2
    ds.InstanceNumber = truth.view + 1
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "00"
    # The "scanner" tags the fan's visible extent: the box that contour detection finds on these
    # pixels (the true sector's box is 1-2 px larger at its anti-aliased edges), so that the
    # DICOM phantom crops exactly like the PNG phantom.
    x0, y0, x1, y1 = detect_sector(image, fallback=True).bbox
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1 - 1, y1 - 1  # inclusive
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 0  # no depth calibration
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.0
    ds.SequenceOfUltrasoundRegions = [region]
    colour = image.ndim == 3
    ds.set_pixel_data(image, "RGB" if colour else "MONOCHROME2", 8, generate_instance_uid=False)
    if colour and syntax == JPEG2000Lossless:
        ds.PhotometricInterpretation = "YBR_RCT"  # the encoder applies the reversible transform
    ds.compress(syntax, image, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _write_patient(
    args: tuple[PhantomConfig, int, PatientLatent, str, int, str],
) -> list[dict[str, object]]:
    """Render and write all views of one patient; return their manifest rows."""
    config, seed, patient, root, compression, image_format = args
    phantom = LiverPhantom(config, seed)
    folder = Path(root) / patient.patient_id
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_PNG_COMPRESSION, compression]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11: skipping adaptive filters halves time
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    rows = []
    suffix = "dcm" if image_format == "dicom" else "png"
    syntax = _dicom_transfer_syntax() if image_format == "dicom" else ""
    entropy = f"mmfusion liver phantom {seed} {json.dumps(config.as_dict(), sort_keys=True)}"
    for view in range(patient.n_views):
        pair = phantom.render(patient, view)
        us_rel = f"{patient.patient_id}/view{view + 1}_us.{suffix}"
        swe_rel = f"{patient.patient_id}/view{view + 1}_swe.{suffix}"
        if image_format == "dicom":
            _write_dicom(Path(root) / us_rel, pair.us, pair.truth, "us", syntax, entropy)
            _write_dicom(Path(root) / swe_rel, pair.swe, pair.truth, "swe", syntax, entropy)
        else:
            _write_png(Path(root) / us_rel, pair.us, params)
            _write_png(Path(root) / swe_rel, cv2.cvtColor(pair.swe, cv2.COLOR_RGB2BGR), params)
        rows.append(
            {
                "patient_id": patient.patient_id,
                "us_path": us_rel,
                "swe_path": swe_rel,
                "stage": STAGE_NAMES[patient.stage],
                **_truth_columns(pair.truth),
            }
        )
    return rows


def generator_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of the phantom package's source files.

    Stored in ``phantom.json``, it lets :func:`make_phantom_dataset` tell a folder written by
    another version of the generator from an up-to-date one, even when the parameters match.
    Any edit of the package's files changes it (comments included: regenerating costs seconds,
    reusing stale images costs wrong results).
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _remove_previous(out: Path, manifest_path: Path) -> None:
    """Delete the images an earlier phantom listed in its manifest, then empty patient folders."""
    if not manifest_path.is_file():
        return
    root = out.resolve()
    folders: set[Path] = set()
    with manifest_path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key in ("us_path", "swe_path"):
                image = (out / row.get(key, "")).resolve()
                if image.parent != root and root in image.parents and image.is_file():
                    image.unlink()
                    folders.add(image.parent)
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty: holds files the phantom did not write
            folder.rmdir()


def _difference(stored: dict, wanted: dict) -> str:
    """``"other parameters (...)"`` or ``"another version of the generator (...)"``, for errors."""
    changed = [k for k in {**stored, **wanted} if stored.get(k) != wanted.get(k)]
    if changed == ["generator"]:
        return (f"another version of the generator (fingerprint {stored.get('generator')} vs "
                f"{wanted['generator']})")
    shown = {k: (stored.get(k), wanted.get(k)) for k in changed if k != "generator"}
    return f"other parameters (stored vs asked: {shown})"


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def make_phantom_dataset(
    root: str | Path,
    n_patients: int = 250,
    seed: int = 0,
    *,
    config: PhantomConfig | None = None,
    workers: int = 2,
    png_compression: int = 1,
    image_format: Literal["png", "dicom"] = "png",
    overwrite: bool = False,
) -> Path:
    """Generate the phantom data set: PNG (or DICOM) pairs and ``manifest.csv`` under ``root``.

    The default (250 patients, seed 0) gives 1,414 pairs with stage prevalence 162:287:284:197:94
    (40/70/69/48/23 patients), as in the paper (II.B). Output is byte-identical for a given seed
    and configuration, whatever ``workers`` is. If ``root`` already holds a phantom generated with
    the same parameters by the same generator code
    (:func:`~mmfusion.liver.phantom.generator_fingerprint`), nothing is regenerated; with
    ``overwrite=True`` an earlier phantom's images are deleted first, so no patient folder of a
    larger earlier run is left behind.

    Args:
        root: Output folder (created if needed).
        n_patients: Number of patients.
        seed: Seed.
        config: Phantom configuration (frame size, distributions); default if None.
        workers: Processes; 0 or 1 generates in this process.
        png_compression: PNG compression level 0-9 (1 is fast and still compact).
        image_format: ``"png"`` (default), or ``"dicom"`` for lossless DICOM files with the same
            pixels and the visible fan's box as a tagged tissue region (needs ``mmfusion[dicom]``).
            Compression: the first that pydicom can encode of JPEG-LS Lossless (needs pyjpegls),
            JPEG 2000 Lossless (pylibjpeg-openjpeg, part of ``mmfusion[dicom]``) and RLE Lossless.
        overwrite: Regenerate even if ``root`` holds a phantom made with other parameters or
            another version of the generator.

    Returns:
        Path of the written ``manifest.csv`` (read it with :func:`read_manifest`).

    Raises:
        FileExistsError: If ``root`` holds a phantom made with other parameters or another
            generator version (or a manifest that is not a phantom's), and not ``overwrite``.
        ImportError: For ``image_format="dicom"`` without pydicom (``pip install
            "mmfusion[dicom]"``).
    """
    cfg = config or PhantomConfig()
    if not isinstance(cfg, PhantomConfig):
        raise TypeError(f"config: expected PhantomConfig or None, got {type(config).__name__}")
    if not 0 <= png_compression <= 9:
        raise ValueError(f"png_compression: expected 0..9, got {png_compression}")
    if image_format not in ("png", "dicom"):
        raise ValueError(f"image_format: expected 'png' or 'dicom', got {image_format!r}")
    if image_format == "dicom":
        _dicom_transfer_syntax()  # fails early, with the install hint, without pydicom
    out = Path(root)
    manifest_path, params_path = out / MANIFEST_NAME, out / PARAMS_NAME
    params = {
        "n_patients": n_patients, "seed": seed, "config": cfg.as_dict(),
        "generator": generator_fingerprint(),
    }
    if image_format != "png":  # PNG phantoms keep the parameters they always had
        params["image_format"] = image_format
    ours = params_path.is_file()
    if manifest_path.exists() and ours:
        stored = json.loads(params_path.read_text())
        if stored == params:
            return manifest_path
        if not overwrite:
            raise FileExistsError(
                f"root: {str(out)!r} holds a phantom made with {_difference(stored, params)}; "
                "pass overwrite=True or choose another folder"
            )
    elif manifest_path.exists() and not overwrite:
        raise FileExistsError(f"root: {str(manifest_path)!r} exists and is not a phantom manifest")
    out.mkdir(parents=True, exist_ok=True)
    if ours:
        _remove_previous(out, manifest_path)
    for stale in (manifest_path, params_path):
        stale.unlink(missing_ok=True)

    patients = LiverPhantom(cfg, seed).cohort(n_patients)
    jobs = [(cfg, seed, p, str(out), png_compression, image_format) for p in patients]
    if workers <= 1:
        results = [_write_patient(job) for job in jobs]
    else:
        # spawn, not fork: a forked child inherits the locks of every thread the parent runs
        # (OpenCV's pool, a test runner's, a data loader's) and hung on them in practice. Spawned
        # workers import the package once (a few seconds in all).
        context = multiprocessing.get_context("spawn")
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
                results = list(pool.map(_write_patient, jobs, chunksize=4))
        finally:
            cv2.setNumThreads(threads)
    rows = [row for patient_rows in results for row in patient_rows]

    tmp = manifest_path.with_suffix(".csv.tmp")
    write_manifest(tmp, rows, COLUMNS)
    params_path.write_text(json.dumps(params, indent=1))
    os.replace(tmp, manifest_path)
    return manifest_path
