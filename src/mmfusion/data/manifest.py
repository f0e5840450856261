"""CSV manifest of paired images, validated before training starts (paper II.B; NOTES.md "Data").

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

import csv
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from mmfusion.data.dicom import MissingDecoderError, is_dicom
from mmfusion.data.io import load_image
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


def _readable(path: Path) -> bool:
    """True if the image decodes: OpenCV (a full decode; grey, reduced size for JPEG), or for a
    DICOM file the frame the data set uses. A missing DICOM decoder or pydicom raises instead: it
    is a problem of the installation, not of the data.
    """
    if is_dicom(path):
        try:
            load_image(path)
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


def _resolve(root: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else root / path


def read_manifest(
    path: str | Path,
    *,
    verify: Literal["decode", "exists", "none"] = "decode",
    num_threads: int = 4,
    required: Sequence[str] = (),
) -> Manifest:
    """Read and validate a CSV manifest; report every problem at once.

    An empty path field marks that modality as missing for the pair (``row.paths[m] is None``);
    the pair is kept. A row whose every path field is empty is a problem, as is an empty field of
    a ``required`` modality.

    Args:
        path: The CSV file. Relative image paths are resolved against its folder.
        verify: ``"decode"`` decodes every image (catches corrupt files; 3.3 ms per 800 x 600
            phantom PNG on one core of a 2-core Intel Xeon, spread over ``num_threads``
            threads), ``"exists"`` only checks that the
            files exist, ``"none"`` skips file checks. Missing modalities are never checked.
        num_threads: Threads for decoding.
        required: Modality keys that every row must have (e.g. ``("us",)``); each must be a
            ``<key>_path`` column.

    Returns:
        The validated :class:`Manifest`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ManifestError: (a ``ValueError``) listing all problems with line numbers and paths:
            missing columns, rows without any image, empty fields of ``required`` modalities,
            unknown stages, missing or unreadable files, duplicate rows, patients listed with more
            than one stage.
    """
    if verify not in ("decode", "exists", "none"):
        raise ValueError(f"verify: expected 'decode', 'exists' or 'none', got {verify!r}")
    if isinstance(required, str) or not isinstance(required, Sequence):
        raise TypeError(f"required: expected a sequence of modality keys, got {required!r}")
    csv_path = Path(path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"path: manifest file {str(csv_path)!r} does not exist")
    root = csv_path.resolve().parent
    source = str(csv_path)
    problems: list[str] = []

    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ManifestError(source, ["the file is empty (expected a header line)"])
        header = [h.strip() for h in header]
        records = [(reader.line_num, values) for values in reader]

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
    to_check: list[tuple[int, str, Path]] = []
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
        empty = [c for key, c in zip(modalities, path_columns, strict=True) if paths[key] is None]
        if path_columns and len(empty) == len(path_columns):
            problems.append(
                f"line {line}: no image (every path column is empty: {', '.join(empty)}); "
                "a pair needs at least one modality"
            )
            row_ok = False
        else:
            for key, column in zip(modalities, path_columns, strict=True):
                file = paths[key]
                if file is not None:
                    to_check.append((line, column, file))
                elif key in required:
                    problems.append(f"line {line}: empty {column} ({key} is required)")
                    row_ok = False
        extra = {
            name: value
            for name, value in get.items()
            if name not in REQUIRED_COLUMNS and name not in path_columns
        }
        for column in [FRAME_COLUMN, *(f"{m}_frame" for m in modalities)]:
            value = extra.get(column, "")
            if value != "" and not (value.isdigit() and value.isascii()):
                problems.append(f"line {line}: {column} {value!r} is not a frame number (0, 1, ...)")
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
        exists = [p.is_file() for _, _, p in to_check]
        for (line, column, p), ok in zip(to_check, exists, strict=True):
            if not ok:
                problems.append(f"line {line}: {column} file not found: {p}")
        if verify == "decode":
            present = [item for item, ok in zip(to_check, exists, strict=True) if ok]
            with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
                readable = list(pool.map(_readable, [p for _, _, p in present]))
            for (line, column, p), ok in zip(present, readable, strict=True):
                if not ok:
                    problems.append(f"line {line}: {column} file is not a readable image: {p}")

    seen: dict[tuple[object, ...], int] = {}
    for row in rows:
        files = tuple((p, row.frame(m)) for m, p in row.paths.items())  # a cine's frames differ
        if files in seen:
            problems.append(f"line {row.line}: duplicate of line {seen[files]} (same image files)")
        else:
            seen[files] = row.line
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
