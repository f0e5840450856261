"""Write the phantom to disk as PNG and DICOM pairs plus a ``manifest.csv`` (the default data set).

Layout (same format as real data, see :mod:`mmfusion.data.manifest`)::

    root/manifest.csv             patient_id,us_path,swe_path,stage,site,<ground-truth columns>
    root/phantom.json             generation parameters (seed, n_patients, config), the
                                  generator version and the fingerprint of its source code
    root/P001/view1_us.png        grey B-mode
    root/P001/view1_swe.png       RGB SWE
    root/P003/view1_us.dcm        a patient of a site whose scanner style stores DICOM

By default (``image_format="native"``) each site's frames are stored as its scanner style says
(:attr:`ScannerStyle.image_format <mmfusion.liver.phantom.ScannerStyle.image_format>`; the
default ``"dual"`` style of site C stores DICOM); ``"png"`` or ``"dicom"`` store every frame so.
DICOM images are ``view1_us.dcm`` / ``view1_swe.dcm``: US Image Storage objects
(SOP class 1.2.840.10008.5.1.4.1.1.6.1) holding the very same pixels in RLE Lossless (the
compression many ultrasound scanners use; with ``mmfusion[dicom]``'s pylibjpeg-rle it writes and
reads as fast as PNG), B-mode as MONOCHROME2, SWE as RGB, with a Sequence of Ultrasound Regions
holding the visible fan's bounding box as a tissue region (a dual-view SWE screen: two tissue
regions of equal size, the B-mode view first, then the elastogram). UIDs derive from the seed, the
configuration, the patient and the view, so the files are byte-identical for any ``workers``.

The extra manifest columns hold each pair's ground truth (view stiffness, latents, SWE box, fan
geometry); :func:`phantom_truth` turns a manifest row back into a :class:`PhantomTruth`. With
``PhantomConfig(labs=True)`` four more columns, ``age,ast,alt,platelets``, hold each patient's lab
values (:mod:`mmfusion.liver.labs`) on every one of its view rows, empty for a patient without labs;
read them with ``read_manifest(path, tabular={"labs": LAB_COLUMNS})``. With
``PhantomConfig(decoy_share > 0)`` (issue 28's interaction knob) three truth columns follow the
others: ``decoy`` (0/1), ``decoy_cover`` (share of the SWE box it covers) and ``decoy_kpa``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from mmfusion.data.manifest import ManifestRow, write_manifest
from mmfusion.data.roi import detect_sector
from mmfusion.elastography.scale_column import SWE_SCALE_COLUMN
from mmfusion.liver.labs import LAB_COLUMNS, cohort_labs
from mmfusion.liver.phantom.cohort import PatientLatent
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.generator import LiverPhantom, PhantomPair, PhantomTruth
from mmfusion.liver.phantom.geometry import SectorGeometry
from mmfusion.liver.stages import STAGE_NAMES

__all__ = ["generator_fingerprint", "make_phantom_dataset", "phantom_truth"]

#: Version of the phantom's rendering, recorded in ``phantom.json`` (2: artifacts, localized signs,
#: scanner styles and sites).
GENERATOR_VERSION = 2
IMAGE_FORMATS = ("native", "png", "dicom")
MANIFEST_NAME = "manifest.csv"
PARAMS_NAME = "phantom.json"
_BOX = ("swe_x0", "swe_y0", "swe_x1", "swe_y1")
_GEOM = tuple(f.name for f in fields(SectorGeometry))
COLUMNS = (
    "patient_id", "us_path", "swe_path", "stage", "site", "style", "view", "stiffness_kpa",
    "latent_stiffness_kpa", "texture", "latent_texture", *_BOX, *_GEOM, "width", "height",
    "swe_shift", SWE_SCALE_COLUMN,
)  # fmt: skip
#: Truth columns of the decoy (issue 28), written only when ``config.decoy_share > 0``.
DECOY_COLUMNS = ("decoy", "decoy_cover", "decoy_kpa")


def _truth_columns(truth: PhantomTruth, config: PhantomConfig) -> dict[str, object]:
    geom = truth.geometry
    return {
        "site": truth.site,
        "style": truth.style,
        "view": truth.view,
        "stiffness_kpa": f"{truth.stiffness_kpa:.4f}",
        "latent_stiffness_kpa": f"{truth.latent_stiffness_kpa:.4f}",
        "texture": f"{truth.texture:.4f}",
        "latent_texture": f"{truth.latent_texture:.4f}",
        **dict(zip(_BOX, truth.swe_box, strict=True)),
        **{name: repr(float(getattr(geom, name))) for name in _GEOM},
        "width": truth.width,
        "height": truth.height,
        "swe_shift": truth.swe_shift,
        SWE_SCALE_COLUMN: f"{config.style(truth.site).kpa_max:g}",
        **(
            {"decoy": int(truth.decoy), "decoy_cover": f"{truth.decoy_cover:.4f}",
             "decoy_kpa": f"{truth.decoy_kpa:.4f}"}
            if config.decoy_share > 0 else {}
        ),  # fmt: skip
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
        site=x["site"],
        style=x["style"],
        swe_shift=int(x["swe_shift"]),
        **(
            {"decoy": x["decoy"] == "1", "decoy_cover": float(x["decoy_cover"]),
             "decoy_kpa": float(x["decoy_kpa"])}
            if all(x.get(c, "") != "" for c in DECOY_COLUMNS) else {}
        ),  # fmt: skip
    )


def _with_labs(
    rows: list[dict[str, object]], patients: list[PatientLatent], seed: int, config: PhantomConfig
) -> list[dict[str, object]]:
    """``rows`` with the patient's lab values (:func:`mmfusion.liver.labs.cohort_labs`, one decimal;
    empty cells for a patient without labs) added to each of its view rows."""
    labs = cohort_labs([p.stage for p in patients], seed, config.labs_missing_share)
    cells = {
        p.patient_id: {c: "" if np.isnan(labs[c][i]) else f"{labs[c][i]:.1f}" for c in LAB_COLUMNS}
        for i, p in enumerate(patients)
    }
    return [{**row, **cells[str(row["patient_id"])]} for row in rows]


def _write_png(path: Path, image: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"could not write {path}")


def _dicom_encoder() -> str:
    """The pydicom plugin that writes the phantom's RLE Lossless files (pylibjpeg-rle, else pydicom's
    own, ten times slower).

    Raises:
        ImportError: Without pydicom >= 3.
    """
    try:
        from pydicom.pixels import get_encoder
        from pydicom.uid import RLELossless
    except ImportError as error:
        raise ImportError(
            'image_format: writing a DICOM phantom needs pydicom >= 3: pip install "mmfusion[dicom]"'
        ) from error
    plugins = get_encoder(RLELossless)._available  # name -> function, in pydicom's own order
    return "pylibjpeg" if "pylibjpeg" in plugins else ""


def _write_dicom(
    path: Path,
    image: np.ndarray,
    truth: PhantomTruth,
    modality: str,
    plugin: str,
    entropy: str,
    regions: list[tuple[int, int, int, int]],
) -> None:
    """Write one frame as a lossless US Image Storage file with ``regions`` (end-exclusive boxes)
    as tissue regions."""
    from pydicom.dataset import Dataset
    from pydicom.uid import RLELossless, UltrasoundImageStorage, generate_uid

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
    ds.ManufacturerModelName = f"liver phantom, {truth.style} style"
    ds.InstitutionName = f"site {truth.site}"
    ds.SeriesDescription = "B-mode" if modality == "us" else "SWE"
    ds.SeriesNumber = 1 if modality == "us" else 2
    ds.InstanceNumber = truth.view + 1
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "00"
    items = []
    for x0, y0, x1, y1 in regions:
        region = Dataset()
        region.RegionSpatialFormat = 1  # 2D
        region.RegionDataType = 1  # tissue
        region.RegionFlags = 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1 - 1, y1 - 1  # inclusive
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 0  # no depth calibration
        region.PhysicalDeltaX = region.PhysicalDeltaY = 0.0
        items.append(region)
    ds.SequenceOfUltrasoundRegions = items
    colour = image.ndim == 3
    ds.set_pixel_data(image, "RGB" if colour else "MONOCHROME2", 8, generate_instance_uid=False)
    ds.compress(RLELossless, image, encoding_plugin=plugin, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _dicom_regions(pair: PhantomPair) -> tuple[list, list]:
    """The tissue regions of a pair's B-mode and SWE DICOM files (end-exclusive boxes).

    The "scanner" tags the fan's visible extent: the box that contour detection finds on the
    B-mode pixels (the true sector's box is 1-2 px larger at its anti-aliased edges), so that a
    DICOM phantom crops exactly like the PNG phantom. A dual-view SWE screen gets the same box at
    both of its views, the B-mode view's first.
    """
    x0, y0, x1, y1 = detect_sector(pair.us, fallback=True).bbox
    truth = pair.truth
    right = [(x0 + truth.swe_shift, y0, x1 + truth.swe_shift, y1)]
    if truth.swe_shift == 0:
        return [(x0, y0, x1, y1)], right
    left = truth.swe_shift - truth.width // 2  # the B-mode view sits one panel to the left
    return [(x0, y0, x1, y1)], [(x0 + left, y0, x1 + left, y1), *right]


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
    if image_format == "native":
        image_format = config.style(patient.site).image_format
    suffix = "dcm" if image_format == "dicom" else "png"
    plugin = _dicom_encoder() if image_format == "dicom" else ""
    entropy = f"mmfusion liver phantom {seed} {json.dumps(_uid_config(config), sort_keys=True)}"
    for view in range(patient.n_views):
        pair = phantom.render(patient, view)
        us_rel = f"{patient.patient_id}/view{view + 1}_us.{suffix}"
        swe_rel = f"{patient.patient_id}/view{view + 1}_swe.{suffix}"
        if image_format == "dicom":
            us_regions, swe_regions = _dicom_regions(pair)
            _write_dicom(Path(root) / us_rel, pair.us, pair.truth, "us", plugin, entropy, us_regions)
            _write_dicom(
                Path(root) / swe_rel, pair.swe, pair.truth, "swe", plugin, entropy, swe_regions
            )
        else:
            _write_png(Path(root) / us_rel, pair.us, params)
            _write_png(Path(root) / swe_rel, cv2.cvtColor(pair.swe, cv2.COLOR_RGB2BGR), params)
        rows.append(
            {
                "patient_id": patient.patient_id,
                "us_path": us_rel,
                "swe_path": swe_rel,
                "stage": STAGE_NAMES[patient.stage],
                **_truth_columns(pair.truth, config),
            }
        )
    return rows


def _uid_config(config: PhantomConfig) -> dict[str, object]:
    """The configuration the DICOM UIDs derive from: ``config.as_dict()`` without the fields added
    after version 2 where they leave the pixels as version 2 draws them (the lab fields always;
    the decoy's while ``decoy_share`` is 0; ``void_black`` while False), so that a default phantom
    keeps its bytes."""
    out = config.as_dict()
    drop = ["labs", "labs_missing_share"]
    if config.decoy_share == 0:
        drop += ["decoy_share", "decoy_cover", "decoy_median_kpa", "decoy_log_sigma"]
    if not config.void_black:
        drop.append("void_black")
    for name in drop:
        out.pop(name, None)
    return out


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
    if stored.get("version") != wanted.get("version"):  # e.g. a version-1 folder (no "version")
        return (f"another version of the generator (version {stored.get('version', 1)} vs "
                f"{wanted['version']})")
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
    image_format: Literal["native", "png", "dicom"] = "native",
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
        image_format: ``"native"`` (default): each site's frames as its scanner style stores them
            (the default sites: PNG at A and B, DICOM at C); ``"png"`` or ``"dicom"``: every
            frame so. DICOM files hold the same pixels, losslessly compressed, with each view's
            fan tagged as a tissue region, in RLE Lossless (needs ``mmfusion[dicom]``).
        overwrite: Regenerate even if ``root`` holds a phantom made with other parameters or
            another version of the generator.

    Returns:
        Path of the written ``manifest.csv`` (read it with :func:`read_manifest`).

    Raises:
        FileExistsError: If ``root`` holds a phantom made with other parameters or another
            generator version (or a manifest that is not a phantom's), and not ``overwrite``.
        ImportError: For DICOM files (``"dicom"``, or ``"native"`` with a DICOM style) without
            pydicom (``pip install
            "mmfusion[dicom]"``).
    """
    cfg = config or PhantomConfig()
    if not isinstance(cfg, PhantomConfig):
        raise TypeError(f"config: expected PhantomConfig or None, got {type(config).__name__}")
    if not 0 <= png_compression <= 9:
        raise ValueError(f"png_compression: expected 0..9, got {png_compression}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {IMAGE_FORMATS}, got {image_format!r}")
    dicom_styles = [s for s in cfg.sites if cfg.style(s).image_format == "dicom"]
    dual = [s for s in cfg.sites if cfg.style(s).layout == "dual"]
    if image_format == "png" and dual:
        warnings.warn(
            f"image_format='png': sites {dual} show a dual-view SWE screen; without DICOM region "
            "tags, contour detection may crop its B-mode view instead of the elastogram (pass "
            "region= to image_roi, or keep image_format='native')",
            UserWarning,
            stacklevel=2,
        )
    if image_format == "dicom" or (image_format == "native" and dicom_styles):
        try:
            _dicom_encoder()  # fails early, with the install hint, without pydicom
        except ImportError as error:
            raise ImportError(
                f"{error} (or pass image_format='png': sites {dicom_styles} store DICOM natively)"
            ) from error
    out = Path(root)
    manifest_path, params_path = out / MANIFEST_NAME, out / PARAMS_NAME
    params = {
        "n_patients": n_patients, "seed": seed, "config": cfg.as_dict(),
        "generator": generator_fingerprint(), "version": GENERATOR_VERSION,
        "image_format": image_format,
    }
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
    columns = COLUMNS if cfg.decoy_share == 0 else (*COLUMNS, *DECOY_COLUMNS)  # issue 28: decoy
    if cfg.labs:  # issue 28: lab values per patient, on every view row (empty cells: no labs)
        rows, columns = _with_labs(rows, patients, seed, cfg), (*columns, *LAB_COLUMNS)

    tmp = manifest_path.with_suffix(".csv.tmp")
    write_manifest(tmp, rows, columns)
    params_path.write_text(json.dumps(params, indent=1))
    os.replace(tmp, manifest_path)
    return manifest_path
