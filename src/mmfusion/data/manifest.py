"""CSV manifest of paired images, validated before training starts (paper II.B; docs/paper_map.rst "Decisions").

One row per image pair::

    patient_id,us_path,swe_path,stage
    P001,P001/view1_us.png,P001/view1_swe.png,F2

Every ``<name>_path`` column is a modality (key ``<name>``, in column order, so three modalities
work too); ``stage`` is ``F0`` to ``F4`` or ``0`` to ``4``; paths are relative to the CSV's folder or
absolute; other columns are kept in :attr:`ManifestRow.extra` and otherwise ignored. Images may be
PNG, JPEG or DICOM, grey or colour.

A modality may be missing for a pair (real scanner data: not every B-mode view has an SWE
acquisition): leave its path field empty. The pair is kept and flagged, ``row.paths[m] is None``
and ``row.available[m] is False``; :meth:`Manifest.availability_counts` tells how many pairs have
which modalities. A row needs at least one image, and ``read_manifest(..., required=("us",))``
makes chosen modalities mandatory::

    patient_id,us_path,swe_path,stage
    P001,P001/view2_us.png,,F2

:func:`read_manifest` checks everything and reports ALL problems at once in one
:class:`ManifestError` (a ``ValueError``), with CSV line numbers and paths: missing columns, empty
fields, rows without any image, unknown stages, missing or unreadable files, duplicate rows, and
patients listed with more than one stage. Nothing is silently dropped, and a missing modality's
file is never looked for.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from mmfusion.data.dicom import MissingDecoderError, is_dicom
from mmfusion.data.io import (
    _dicom_info,
    _raster_info,
    _size_problem,
    load_image,
    max_image_pixels,
)
from mmfusion.liver.stages import NUM_STAGES, STAGE_NAMES, parse_stage

__all__ = [
    "SWE_SCALE_COLUMN",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "read_manifest",
    "write_manifest",
]

PATH_SUFFIX = "_path"
FRAME_COLUMN = "frame"
"""Optional column: the frame of multi-frame files to use (``<modality>_frame`` for one modality)."""
SWE_SCALE_COLUMN = "swe_scale_kpa"
"""Optional column: the top of the row's SWE colour scale in kPa (the legend's upper label)."""
REQUIRED_COLUMNS = ("patient_id", "stage")
#: How far :func:`read_manifest` checks image files (its ``verify=``).
VERIFY_MODES = ("decode", "header", "exists", "none")


class ManifestError(ValueError):
    """A manifest has problems; :attr:`problems` lists every one of them (one line each)."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"manifest {source}: {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class ManifestRow:
    """One image pair of a manifest.

    Attributes:
        line: Line number in the CSV file (the header is line 1).
        patient_id: Patient identifier.
        stage: Fibrosis stage label 0..4.
        paths: Modality key -> absolute image path, in manifest column order; ``None`` for a
            modality missing from this pair (its CSV field was empty).
        extra: Values of the other columns, by column name.
    """

    line: int
    patient_id: str
    stage: int
    paths: Mapping[str, Path | None]
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def available(self) -> dict[str, bool]:
        """Modality key -> whether this pair has its image (``paths[m] is not None``)."""
        return {key: path is not None for key, path in self.paths.items()}

    def frame(self, modality: str) -> int | None:
        """The frame of a multi-frame (cine) file to use for ``modality``: the row's
        ``<modality>_frame`` column, else its ``frame`` column, else ``None`` (the middle frame,
        :func:`~mmfusion.data.load_image`'s rule). Validated by :func:`read_manifest`."""
        for column in (f"{modality}_frame", FRAME_COLUMN):
            value = self.extra.get(column, "")
            if value != "":
                return int(value)
        return None

    @property
    def swe_scale_kpa(self) -> float | None:
        """The top of this pair's SWE colour scale in kPa (its ``swe_scale_kpa`` column), or
        ``None`` where the column is absent or empty. Validated by :func:`read_manifest`."""
        value = self.extra.get(SWE_SCALE_COLUMN, "").strip()
        return float(value) if value else None


@dataclass(frozen=True)
class Manifest:
    """A validated list of image pairs (see :func:`read_manifest`).

    Attributes:
        rows: The pairs, in file order.
        modalities: Modality keys in column order (``("us", "swe")`` for ``us_path,swe_path``).
        source: Where the manifest came from (a path, or a description).
    """

    rows: tuple[ManifestRow, ...]
    modalities: tuple[str, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("modalities: expected at least one modality, got none")
        for row in self.rows:
            if tuple(row.paths) != self.modalities:
                raise ValueError(
                    f"rows: line {row.line} has modalities {tuple(row.paths)}, "
                    f"expected {self.modalities}"
                )
            if not any(row.available.values()):
                raise ValueError(
                    f"rows: line {row.line} has no image (every path is None); "
                    f"expected at least one of {self.modalities}"
                )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> ManifestRow:
        return self.rows[index]

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    @property
    def labels(self) -> np.ndarray:
        """``[N]`` int64 stage labels."""
        return np.array([r.stage for r in self.rows], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        """``[N]`` patient ids (object array), the groups of a patient-level split."""
        return np.array([r.patient_id for r in self.rows], dtype=object)

    @property
    def availability(self) -> np.ndarray:
        """``[N, M]`` bool: pair ``i`` has modality ``modalities[j]``."""
        flags = [[row.available[m] for m in self.modalities] for row in self.rows]
        return np.array(flags, dtype=bool).reshape(len(self.rows), len(self.modalities))

    def availability_counts(self) -> dict[tuple[str, ...], int]:
        """Number of pairs per availability pattern: the tuple of modalities present.

        Patterns are keyed in column order and listed from the most common down (ties in order of
        first appearance); patterns that no pair has are left out. ``"+".join(pattern)`` gives a
        printable name.

        Example:
            >>> rows = (ManifestRow(2, "P1", 0, {"us": Path("a.png"), "swe": Path("b.png")}),
            ...         ManifestRow(3, "P1", 0, {"us": Path("c.png"), "swe": None}),
            ...         ManifestRow(4, "P2", 1, {"us": Path("d.png"), "swe": None}))
            >>> Manifest(rows, ("us", "swe")).availability_counts()
            {('us',): 2, ('us', 'swe'): 1}
        """
        counts: dict[tuple[str, ...], int] = {}
        for row in self.rows:
            pattern = tuple(m for m in self.modalities if row.available[m])
            counts[pattern] = counts.get(pattern, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def stage_counts(self) -> dict[str, int]:
        """Number of pairs per stage name, F0..F4 (zeros included)."""
        counts = np.bincount(self.labels, minlength=NUM_STAGES) if self.rows else [0] * NUM_STAGES
        return {name: int(c) for name, c in zip(STAGE_NAMES, counts, strict=True)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """A manifest with the rows at ``indices`` (in that order)."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        bad = [i for i in idx if not -len(self.rows) <= i < len(self.rows)]
        if bad:
            raise ValueError(f"indices: expected values in [0, {len(self.rows)}), got {bad[:5]}")
        return Manifest(tuple(self.rows[i] for i in idx), self.modalities, self.source)


def _decodes(path: Path, frame: int | None) -> bool:
    """True if the image decodes: OpenCV (a full decode; grey, reduced size for JPEG), or for a
    DICOM file the frame the row uses. A missing DICOM decoder or pydicom raises instead: it is a
    problem of the installation, not of the data.
    """
    if is_dicom(path):
        try:
            load_image(path, frame, max_pixels=MAX_CHECKED)
        except MissingDecoderError:
            raise
        except ValueError:
            return False
        return True
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return False
    if data.size == 0:
        return False
    image = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_2)
    return image is not None and image.size > 0


MAX_CHECKED = 2**62  # the size is checked before _decodes runs, against the caller's limit


def _file_problem(path: Path, frame: int | None, verify: str, limit: int) -> str | None:
    """What is wrong with one image file of a row (``"<what>: <path>"``), or None.

    ``"exists"``: the file exists. ``"header"``: and its header is readable, its size within
    :data:`~mmfusion.data.io.MIN_IMAGE_SIDE` and the pixel limit, ``frame`` within its frame
    count (no pixel decoded). ``"decode"``: and its frame decodes.
    """
    if path.is_dir():
        return f"is a directory, expected an image file: {path}"
    if not path.is_file():
        return f"file not found: {path}"
    if verify == "exists":
        return None
    try:
        info = _dicom_info(path) if is_dicom(path) else _raster_info(path)
    except ValueError:
        return f"file is not a readable image: {path}"
    problem = _size_problem(info, limit)
    if problem is not None:
        return f"image {path} {problem}"
    if frame is not None and frame >= info.frames:
        return (
            f"frame {frame} is out of range: {path} has {info.frames} frame(s) "
            f"(frames 0 to {info.frames - 1})"
        )
    if verify == "decode" and not _decodes(path, frame):
        return f"file is not a readable image: {path}"
    return None


def _resolve(root: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else root / path


def _read_text(csv_path: Path) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is allowed)."""
    raw = csv_path.read_bytes()
    source = str(csv_path)
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        b"\x00" in raw[:4096] and raw.count(b"\x00") * 4 > len(raw[:4096])
    ):
        raise ManifestError(
            source,
            ["the file is UTF-16 text (or binary: it holds NUL bytes); expected UTF-8 text: save "
             "the manifest as UTF-8 (\"CSV UTF-8\" in spreadsheet programs)"],
        )  # fmt: skip
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        at = skip + error.start
        line = raw.count(b"\n", 0, at) + 1
        raise ManifestError(
            source,
            [f"line {line}: byte 0x{raw[at]:02x} at offset {at} is not UTF-8 (the file is in "
             "another encoding, e.g. Latin-1 or Windows-1252); expected UTF-8 text: save the "
             "manifest as UTF-8 (\"CSV UTF-8\" in spreadsheet programs)"],
        ) from None  # fmt: skip


def _records(csv_path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """The header and the ``(line, values)`` records of a manifest CSV; unreadable text or CSV
    is a :class:`ManifestError` naming the line."""
    reader = csv.reader(io.StringIO(_read_text(csv_path), newline=""))
    records: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    try:
        for values in reader:
            if header is None:
                header = values
            else:
                records.append((reader.line_num, values))
    except csv.Error as error:
        limit = csv.field_size_limit()
        reason = (
            f"a field is longer than {limit:,} characters (Python's csv.field_size_limit); "
            "manifest fields are paths, stages and short values"
            if "field larger than field limit" in str(error)
            else f"not readable as CSV ({error})"
        )
        raise ManifestError(str(csv_path), [f"line {reader.line_num}: {reason}"]) from None
    return header, records


def read_manifest(
    path: str | Path,
    *,
    verify: Literal["decode", "header", "exists", "none"] = "decode",
    num_threads: int = 4,
    required: Sequence[str] = (),
    max_pixels: int | None = None,
) -> Manifest:
    """Read and validate a CSV manifest; report every problem at once.

    An empty path field marks that modality as missing for the pair (``row.paths[m] is None``);
    the pair is kept. A row whose every path field is empty is a problem, as is an empty field of
    a ``required`` modality.

    Two rows are duplicates when they name the same files (compared as real paths: a file
    reached through ``..`` or a symbolic link is the same file) and frames; an image file (and
    frame) may belong to one patient only.

    Args:
        path: The CSV file, UTF-8 (a byte-order mark is allowed). Relative image paths are
            resolved against its folder.
        verify: How far image files are checked (missing modalities never are):
            ``"header"`` reads each file's header only (:func:`~mmfusion.data.image_info`): it
            exists, is an image, is at least 8 x 8 and at most the pixel limit, and has the
            row's frame; no pixel is decoded, so a training run that decodes every image anyway
            (:func:`~mmfusion.data.pipeline.cached_crops` names the line of a file that fails
            there) should use it. ``"decode"`` also decodes every image (catches corrupt pixel
            data; 3.3 ms per 800 x 600 phantom PNG on one core of a 2-core Intel Xeon, spread
            over ``num_threads`` threads). ``"exists"`` only checks that the files exist,
            ``"none"`` skips file checks.
        num_threads: Threads for reading headers and decoding.
        required: Modality keys that every row must have (e.g. ``("us",)``); each must be a
            ``<key>_path`` column.
        max_pixels: Pixel limit per frame; None: :func:`~mmfusion.data.max_image_pixels` (the
            environment variable ``MMFUSION_MAX_IMAGE_PIXELS``, else
            :data:`~mmfusion.data.io.MAX_IMAGE_PIXELS`).

    Returns:
        The validated :class:`Manifest`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``path`` is a directory.
        ManifestError: (a ``ValueError``) listing all problems with line numbers and paths:
            text that is not UTF-8 or not CSV (a field over ``csv.field_size_limit()``
            characters), missing columns, rows without any image, empty fields of ``required``
            modalities, unknown stages, missing, unreadable, too small or too large files,
            frames beyond a file's frame count, duplicate rows, one image in rows of two
            patients, patients listed with more than one stage.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify: expected one of {VERIFY_MODES}, got {verify!r}")
    if isinstance(required, str) or not isinstance(required, Sequence):
        raise TypeError(f"required: expected a sequence of modality keys, got {required!r}")
    limit = max_image_pixels(max_pixels)
    csv_path = Path(path)
    if csv_path.is_dir():
        raise ValueError(
            f"path: manifest {str(csv_path)!r} is a directory; expected a CSV file (e.g. "
            f"{str(csv_path / 'manifest.csv')!r})"
        )
    if not csv_path.is_file():
        raise FileNotFoundError(f"path: manifest file {str(csv_path)!r} does not exist")
    root = csv_path.resolve().parent
    source = str(csv_path)
    problems: list[str] = []

    header, records = _records(csv_path)
    if header is None:
        raise ManifestError(source, ["the file is empty (expected a header line)"])
    header = [h.strip() for h in header]

    path_columns = [h for h in header if h.endswith(PATH_SUFFIX) and len(h) > len(PATH_SUFFIX)]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if not path_columns:
        missing.append("<modality>_path (e.g. us_path, swe_path)")
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)} (header: {', '.join(header)})")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        problems.append(f"duplicate column name(s): {', '.join(duplicated)}")
    modalities = tuple(c[: -len(PATH_SUFFIX)] for c in path_columns)
    unknown = [m for m in required if m not in modalities]
    if unknown and path_columns:
        problems.append(
            f"required: no <name>_path column for {', '.join(map(repr, unknown))} "
            f"(the path columns are {', '.join(path_columns)})"
        )
    col = {name: header.index(name) for name in header}

    rows: list[ManifestRow] = []
    to_check: list[tuple[int, str, Path, int | None]] = []
    for line, values in records:
        if not any(v.strip() for v in values):
            continue  # blank line: nothing to drop
        if len(values) != len(header):
            problems.append(f"line {line}: {len(values)} fields, the header has {len(header)}")
            continue
        get = {name: values[i].strip() for name, i in col.items()}
        row_ok = True
        patient = get.get("patient_id", "")
        if "patient_id" in col and not patient:
            problems.append(f"line {line}: empty patient_id")
            row_ok = False
        stage = -1
        if "stage" in col:
            try:
                stage = parse_stage(get["stage"])
            except ValueError:
                problems.append(
                    f"line {line}: unknown stage {get['stage']!r} (expected F0..F4 or 0..4)"
                )
                row_ok = False
        paths: dict[str, Path | None] = {}
        for key, column in zip(modalities, path_columns, strict=True):
            # An empty field is a missing modality: flagged (None), its file never looked for.
            paths[key] = _resolve(root, get[column]) if get[column] else None
        extra = {
            name: value
            for name, value in get.items()
            if name not in REQUIRED_COLUMNS and name not in path_columns
        }
        frames_ok = True
        for column in [FRAME_COLUMN, *(f"{m}_frame" for m in modalities)]:
            value = extra.get(column, "")
            if value != "" and not (value.isdigit() and value.isascii()):
                problems.append(f"line {line}: {column} {value!r} is not a frame number (0, 1, ...)")
                row_ok = frames_ok = False
        empty = [c for key, c in zip(modalities, path_columns, strict=True) if paths[key] is None]
        if path_columns and len(empty) == len(path_columns):
            problems.append(
                f"line {line}: no image (every path column is empty: {', '.join(empty)}); "
                "a pair needs at least one modality"
            )
            row_ok = False
        else:
            probe = ManifestRow(line, patient, stage, paths, extra)
            for key, column in zip(modalities, path_columns, strict=True):
                file = paths[key]
                if file is not None:
                    to_check.append((line, column, file, probe.frame(key) if frames_ok else None))
                elif key in required:
                    problems.append(f"line {line}: empty {column} ({key} is required)")
                    row_ok = False
        scale = extra.get(SWE_SCALE_COLUMN, "").strip()
        if scale and not _is_positive_number(scale):
            problems.append(
                f"line {line}: {SWE_SCALE_COLUMN} {scale!r} is not a positive number of kPa"
            )
            row_ok = False
        if row_ok and not missing:
            rows.append(ManifestRow(line, patient, stage, paths, extra))

    if verify != "none":
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            found = list(pool.map(lambda item: _file_problem(item[2], item[3], verify, limit),
                                  to_check))  # fmt: skip
        for (line, column, _, _), problem in zip(to_check, found, strict=True):
            if problem is not None:
                problems.append(f"line {line}: {column} {problem}")

    problems.extend(_identity_problems(rows))
    by_patient: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_patient[row.patient_id][row.stage].append(row.line)
    for patient, stages in by_patient.items():
        if len(stages) > 1:
            listed = "; ".join(
                f"{STAGE_NAMES[s]} on line(s) {', '.join(map(str, lines))}"
                for s, lines in sorted(stages.items())
            )
            problems.append(f"patient {patient!r} has more than one stage: {listed}")
    if not problems and not rows:
        problems.append("no image pairs (the file has a header but no rows)")
    if problems:
        raise ManifestError(source, problems)
    return Manifest(tuple(rows), modalities, source)


def _identity_problems(rows: Sequence[ManifestRow]) -> list[str]:
    """Duplicate rows and images shared by patients, comparing files by their real path (a file
    reached through ``..`` or a symbolic link is one file) and frame (a cine's frames differ)."""
    problems: list[str] = []
    real: dict[Path, str] = {}

    def image(path: Path, frame: int | None) -> tuple[str, int | None]:
        if path not in real:
            real[path] = os.path.realpath(path)
        return real[path], frame

    seen: dict[tuple[object, ...], int] = {}
    owner: dict[tuple[str, int | None], tuple[str, int, str]] = {}
    for row in rows:
        files = tuple(None if p is None else image(p, row.frame(m)) for m, p in row.paths.items())
        if files in seen:
            shown = ", ".join(f for f, _ in (i for i in files if i is not None))
            problems.append(
                f"line {row.line}: duplicate of line {seen[files]} (same image files: {shown})"
            )
            continue
        seen[files] = row.line
        for m, item in zip(row.paths, files, strict=True):
            if item is None:
                continue
            first = owner.setdefault(item, (row.patient_id, row.line, m))
            if first[0] != row.patient_id:
                problems.append(
                    f"line {row.line}: {m}_path {item[0]} is the same image as line {first[1]}'s "
                    f"{first[2]}_path, of patient {first[0]!r}, but line {row.line} is patient "
                    f"{row.patient_id!r} (one image belongs to one patient)"
                )
    return problems


def write_manifest(
    path: str | Path,
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
) -> Path:
    """Write a manifest CSV (e.g. for your own data or a phantom).

    Args:
        path: Output CSV path; its folder must exist.
        rows: One mapping per pair with at least the ``columns`` keys.
        columns: Column order, e.g. ``["patient_id", "us_path", "swe_path", "stage"]``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})
    return out


def _is_positive_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return bool(np.isfinite(value) and value > 0)
