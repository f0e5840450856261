"""CSV manifest of paired images, validated before training starts (paper II.B; docs/paper_map.rst "Decisions").

One row per image pair::

    patient_id,us_path,swe_path,label
    P001,P001/view1_us.png,P001/view1_swe.png,2

Every ``<name>_path`` column is a modality (key ``<name>``, in column order, so three modalities
work too); paths are relative to the CSV's folder or absolute; images may be PNG, JPEG or DICOM,
grey or colour. The label column is read with a :class:`~mmfusion.labels.LabelSpec`
(``read_manifest(path, labels=spec)``): the spec names the column and the classes and says how a
cell is spelled, e.g. ``normal``/``benign``/``malignant``. Without a spec the column is ``label``
and holds class indices ``0 .. K-1``. A domain brings its own spec: the liver's METAVIR stages
live in a ``stage`` column, read with the liver package's ``labels=METAVIR``.

Other columns are kept as text in :attr:`ManifestRow.extra`; ``columns={name: parser}`` parses
(and so validates) chosen ones into :attr:`ManifestRow.values`, and ``tabular={modality:
columns}`` makes a modality of numeric columns (a vector of lab values, say) instead of a file,
read into :attr:`ManifestRow.tabular` with NaN for an empty cell.

A modality may be missing for a pair (real scanner data: not every B-mode view has an SWE
acquisition): leave its path field empty (for a tabular modality: all of its cells). The pair is
kept and flagged, ``row.paths[m] is None`` and ``row.available[m] is False``;
:meth:`Manifest.availability_counts` tells how many pairs have which modalities. A row needs at
least one modality, and ``read_manifest(..., required=("us",))`` makes chosen modalities
mandatory::

    patient_id,us_path,swe_path,label
    P001,P001/view2_us.png,,2

:func:`read_manifest` checks everything and reports ALL problems at once in one
:class:`ManifestError` (a ``ValueError``), with CSV line numbers and paths: missing columns, empty
fields, rows without any modality, unknown labels, cells that a ``columns=`` parser refuses,
non-numeric tabular cells, missing or unreadable files, duplicate rows, and patients listed with
more than one label. Nothing is silently dropped, and a missing modality's file is never looked
for.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from mmfusion.labels import LabelSpec

__all__ = [
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "read_manifest",
    "write_manifest",
]

PATH_SUFFIX = "_path"
FRAME_COLUMN = "frame"
"""Optional column: the frame of multi-frame files to use (``<modality>_frame`` for one modality)."""
LABEL_COLUMN = "label"
"""The label column of a manifest read without a :class:`~mmfusion.labels.LabelSpec`."""
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
        label: Class index ``0 .. K-1`` (names in :attr:`Manifest.label_spec`).
        paths: Image modality key -> absolute image path, in manifest column order; ``None`` for
            a modality missing from this pair (its CSV field was empty).
        extra: Text of the other columns, by column name.
        values: Column -> parsed value of the columns given to ``read_manifest(columns=)``
            (non-empty cells only).
        tabular: Tabular modality -> its values in column order (``float``; ``nan`` where the
            cell was empty), for ``read_manifest(tabular=)``.
    """

    line: int
    patient_id: str
    label: int
    paths: Mapping[str, Path | None]
    extra: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, object] = field(default_factory=dict)
    tabular: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def stage(self) -> int:
        """The class index, :attr:`label` (the liver's name for it: a fibrosis stage)."""
        return self.label

    @property
    def available(self) -> dict[str, bool]:
        """Modality key -> whether this pair has that modality (an image modality has its file,
        ``paths[m] is not None``; a tabular modality has at least one value that is not NaN).
        Image modalities first, in column order, then tabular ones."""
        flags = {key: path is not None for key, path in self.paths.items()}
        flags.update({key: any(not math.isnan(v) for v in vals) for key, vals in self.tabular.items()})
        return flags

    def frame(self, modality: str) -> int | None:
        """The frame of a multi-frame (cine) file to use for ``modality``: the row's
        ``<modality>_frame`` column, else its ``frame`` column, else ``None`` (the middle frame,
        :func:`~mmfusion.data.load_image`'s rule). Validated by :func:`read_manifest`."""
        for column in (f"{modality}_frame", FRAME_COLUMN):
            value = self.extra.get(column, "")
            if value != "":
                return int(value)
        return None


@dataclass(frozen=True)
class Manifest:
    """A validated list of image pairs (see :func:`read_manifest`).

    Attributes:
        rows: The pairs, in file order.
        modalities: Modality keys: image modalities in column order (``("us", "swe")`` for
            ``us_path,swe_path``), then tabular modalities in the order given.
        source: Where the manifest came from (a path, or a description).
        label_spec: The :class:`~mmfusion.labels.LabelSpec` of the labels; ``None`` (when
            building a manifest by hand) becomes classes ``"0" .. "K-1"`` with ``K`` one more
            than the largest label.
        tabular: Tabular modality -> its columns (``read_manifest(tabular=)``).
    """

    rows: tuple[ManifestRow, ...]
    modalities: tuple[str, ...]
    source: str = "<memory>"
    label_spec: LabelSpec | None = None
    tabular: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("modalities: expected at least one modality, got none")
        tabular = {str(m): tuple(columns) for m, columns in dict(self.tabular).items()}
        unknown = [m for m in tabular if m not in self.modalities]
        if unknown:
            raise ValueError(
                f"tabular: modalities {unknown} are not among the modalities {self.modalities}"
            )
        object.__setattr__(self, "tabular", tabular)
        images = tuple(m for m in self.modalities if m not in tabular)
        for row in self.rows:
            if tuple(row.paths) != images or tuple(row.tabular) != tuple(tabular):
                raise ValueError(
                    f"rows: line {row.line} has modalities {(*row.paths, *row.tabular)}, "
                    f"expected {self.modalities}"
                )
            widths = {m: len(v) for m, v in row.tabular.items() if len(v) != len(tabular[m])}
            if widths:
                raise ValueError(
                    f"rows: line {row.line} has {widths} tabular values, expected "
                    f"{ {m: len(tabular[m]) for m in widths} } (one per column)"
                )
            if not any(row.available.values()):
                what = "image (every path is None)" if not tabular else (
                    "modality (every path is None and every tabular value NaN)"
                )
                raise ValueError(
                    f"rows: line {row.line} has no {what}; expected at least one of "
                    f"{self.modalities}"
                )
        spec = self.label_spec
        if spec is None:
            top = max((row.label for row in self.rows), default=0)
            spec = LabelSpec.numbered(max(int(top), 0) + 1)
            object.__setattr__(self, "label_spec", spec)
        elif not isinstance(spec, LabelSpec):
            raise TypeError(f"label_spec: expected a LabelSpec or None, got {type(spec).__name__}")
        bad = [row for row in self.rows if not 0 <= row.label < spec.num_classes]
        if bad:
            raise ValueError(
                f"rows: line {bad[0].line} has label {bad[0].label!r}, expected a class index in "
                f"[0, {spec.num_classes - 1}] (label_spec has {spec.num_classes} classes)"
            )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> ManifestRow:
        return self.rows[index]

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    @property
    def labels(self) -> np.ndarray:
        """``[N]`` int64 class labels."""
        return np.array([r.label for r in self.rows], dtype=np.int64)

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

        Patterns are keyed in :attr:`modalities` order and listed from the most common down
        (ties in order of first appearance); patterns that no pair has are left out.
        ``"+".join(pattern)`` gives a printable name.

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

    def label_counts(self) -> dict[str, int]:
        """Number of pairs per class name of :attr:`label_spec`, in class order (zeros included)."""
        spec = self.label_spec
        assert spec is not None  # set by __post_init__
        k = spec.num_classes
        counts = np.bincount(self.labels, minlength=k) if self.rows else [0] * k
        return {name: int(c) for name, c in zip(spec.names, counts, strict=True)}

    def stage_counts(self) -> dict[str, int]:
        """:meth:`label_counts` (the liver's name: pairs per fibrosis stage)."""
        return self.label_counts()

    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """A manifest with the rows at ``indices`` (in that order), the same label spec and
        tabular modalities."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        bad = [i for i in idx if not -len(self.rows) <= i < len(self.rows)]
        if bad:
            raise ValueError(f"indices: expected values in [0, {len(self.rows)}), got {bad[:5]}")
        return Manifest(tuple(self.rows[i] for i in idx), self.modalities, self.source,
                        self.label_spec, self.tabular)  # fmt: skip


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


def _label_problem(spec: LabelSpec | None, column: str, text: str) -> tuple[int, str | None]:
    """The class index of one label cell, or ``(-1, what is wrong)``."""
    if not text:
        return -1, f"empty {column}"
    if spec is not None:
        try:
            return spec.parse(text), None
        except ValueError:
            return -1, f"unknown {column} {text!r} (expected {spec.expected()})"
    if text.isdigit() and text.isascii():
        return int(text), None
    return -1, (
        f"{column} {text!r} is not a class index (0, 1, 2, ...); to read class names, pass "
        "labels=LabelSpec(names=(...)) (mmfusion.labels)"
    )


def _check_columns(columns: object) -> dict[str, Callable[[str], object]]:
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise TypeError(
            f"columns: expected a mapping of column name -> parser (a callable of the cell's "
            f"text), got {type(columns).__name__}"
        )
    for name, parser in columns.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"columns: expected column names (str), got {name!r}")
        if not callable(parser):
            raise TypeError(
                f"columns: the parser of {name!r} must be callable (text -> value), got "
                f"{type(parser).__name__}"
            )
    return dict(columns)


def _check_tabular(tabular: object) -> dict[str, tuple[str, ...]]:
    if tabular is None:
        return {}
    if not isinstance(tabular, Mapping):
        raise TypeError(
            f"tabular: expected a mapping of modality -> its column names, e.g. "
            f"{{'labs': ('age', 'ast')}}, got {type(tabular).__name__}"
        )
    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for modality, columns in tabular.items():
        if not isinstance(modality, str) or not modality:
            raise TypeError(f"tabular: expected modality names (str), got {modality!r}")
        if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns or not all(
            isinstance(c, str) and c for c in columns
        ):
            raise TypeError(
                f"tabular: expected a non-empty sequence of column names for {modality!r}, got "
                f"{columns!r}"
            )
        for column in columns:
            if column in owner:
                raise ValueError(
                    f"tabular: column {column!r} is listed twice (for {owner[column]!r} and "
                    f"{modality!r}); expected each column in one modality once"
                )
            owner[column] = modality
        out[modality] = tuple(columns)
    return out


def _tabular_value(text: str) -> float | None:
    """The cell as a float (``nan`` if empty), or ``None`` if it is not a finite number."""
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_manifest(
    path: str | Path,
    *,
    labels: LabelSpec | None = None,
    columns: Mapping[str, Callable[[str], object]] | None = None,
    tabular: Mapping[str, Sequence[str]] | None = None,
    verify: Literal["decode", "header", "exists", "none"] = "decode",
    num_threads: int = 4,
    required: Sequence[str] = (),
    max_pixels: int | None = None,
) -> Manifest:
    """Read and validate a CSV manifest; report every problem at once.

    An empty path field marks that modality as missing for the pair (``row.paths[m] is None``);
    the pair is kept. A row without any modality is a problem, as is a missing ``required``
    modality.

    Two rows are duplicates when they name the same files (compared as real paths: a file
    reached through ``..`` or a symbolic link is the same file) and frames; an image file (and
    frame) may belong to one patient only.

    Args:
        path: The CSV file, UTF-8 (a byte-order mark is allowed). Relative image paths are
            resolved against its folder.
        labels: How the labels are written: the spec's ``column`` holds them, parsed with
            :meth:`~mmfusion.labels.LabelSpec.parse` (names, aliases). ``None``: a ``label``
            column of class indices ``0 .. K-1``, ``K`` one more than the largest (classes named
            ``"0" .. "K-1"``); a manifest with a ``stage`` column but no ``label`` column is then
            refused with a hint (a liver manifest: the liver package's ``METAVIR``). The spec
            used is :attr:`Manifest.label_spec`.
        columns: Column name -> parser of its cells (``text -> value``) for extra columns that
            must be valid, e.g. ``{"swe_scale_kpa": parse_swe_scale_kpa}``: every non-empty cell
            is parsed here, a ``ValueError`` (or ``TypeError``) is a problem naming the line and
            column, and the parsed value is ``row.values[column]`` (the text stays in
            ``row.extra``). A column the header lacks is not a problem (the values are absent).
        tabular: Modality -> its numeric columns, e.g. ``{"labs": ("age", "ast", "alt")}``: a
            modality whose values are cells instead of a file. ``row.tabular[m]`` is a tuple of
            floats with ``nan`` for an empty cell; the modality is available in a row with at
            least one value; a cell that is not a finite number is a problem naming its line.
            Tabular modalities follow the image modalities in :attr:`Manifest.modalities`.
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
            ``<key>_path`` column or a ``tabular`` modality.
        max_pixels: Pixel limit per frame; None: :func:`~mmfusion.data.max_image_pixels` (the
            environment variable ``MMFUSION_MAX_IMAGE_PIXELS``, else
            :data:`~mmfusion.data.io.MAX_IMAGE_PIXELS`).

    Returns:
        The validated :class:`Manifest`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``path`` is a directory, or ``verify`` or ``tabular`` is malformed.
        TypeError: ``labels``, ``columns``, ``tabular`` or ``required`` of the wrong type.
        ManifestError: (a ``ValueError``) listing all problems with line numbers and paths:
            text that is not UTF-8 or not CSV (a field over ``csv.field_size_limit()``
            characters), missing columns, rows without any modality, empty fields of
            ``required`` modalities, unknown labels, cells refused by a ``columns`` parser or
            not numeric in a ``tabular`` column, missing, unreadable, too small or too large
            files, frames beyond a file's frame count, duplicate rows, one image in rows of two
            patients, patients listed with more than one label.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify: expected one of {VERIFY_MODES}, got {verify!r}")
    if isinstance(required, str) or not isinstance(required, Sequence):
        raise TypeError(f"required: expected a sequence of modality keys, got {required!r}")
    if labels is not None and not isinstance(labels, LabelSpec):
        raise TypeError(
            f"labels: expected a LabelSpec (mmfusion.labels) or None, got {type(labels).__name__}"
        )
    parsers = _check_columns(columns)
    table = _check_tabular(tabular)
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

    label_column = labels.column if labels is not None else LABEL_COLUMN
    path_columns = [h for h in header if h.endswith(PATH_SUFFIX) and len(h) > len(PATH_SUFFIX)]
    missing = [c for c in ("patient_id", label_column) if c not in header]
    if labels is None and label_column in missing and "stage" in header:
        missing[missing.index(label_column)] = (
            "label (the header has a 'stage' column: read METAVIR fibrosis stages with "
            "labels=liver.METAVIR, after 'from mmfusion import liver'; another label set with "
            "labels=LabelSpec(..., column='stage'))"
        )
    if not path_columns and not table:
        missing.append("<modality>_path (e.g. us_path, swe_path)")
    table_columns = [c for cols in table.values() for c in cols]
    missing.extend(c for c in table_columns if c not in header)
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)} (header: {', '.join(header)})")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        problems.append(f"duplicate column name(s): {', '.join(duplicated)}")
    images = tuple(c[: -len(PATH_SUFFIX)] for c in path_columns)
    modalities = images + tuple(table)
    for m in table:
        if m in images:
            problems.append(f"tabular: modality {m!r} is also an image column ({m}_path)")
    reserved = {"patient_id", label_column, *path_columns}
    for c in table_columns:
        if c in reserved:
            problems.append(f"tabular: column {c!r} is the patient, label or a path column")
    for c in parsers:
        if c in reserved or c in table_columns:
            problems.append(
                f"columns: {c!r} is the patient, label, a path or a tabular column (read by "
                "read_manifest itself)"
            )
    unknown = [m for m in required if m not in modalities]
    if unknown and (path_columns or table):
        problems.append(
            f"required: no <name>_path column for {', '.join(map(repr, unknown))} "
            f"(the path columns are {', '.join(path_columns)}"
            + (f"; the tabular modalities {', '.join(table)})" if table else ")")
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
        label = -1
        if label_column in col:
            label, problem = _label_problem(labels, label_column, get[label_column])
            if problem is not None:
                problems.append(f"line {line}: {problem}")
                row_ok = False
        paths: dict[str, Path | None] = {}
        for key, column in zip(images, path_columns, strict=True):
            # An empty field is a missing modality: flagged (None), its file never looked for.
            paths[key] = _resolve(root, get[column]) if get[column] else None
        extra = {
            name: value
            for name, value in get.items()
            if name not in ("patient_id", label_column) and name not in path_columns
        }
        frames_ok = True
        for column in [FRAME_COLUMN, *(f"{m}_frame" for m in images)]:
            value = extra.get(column, "")
            if value != "" and not (value.isdigit() and value.isascii()):
                problems.append(f"line {line}: {column} {value!r} is not a frame number (0, 1, ...)")
                row_ok = frames_ok = False
        parsed: dict[str, object] = {}
        for column, parser in parsers.items():
            text = extra.get(column, "")
            if not text:
                continue
            try:
                parsed[column] = parser(text)
            except (ValueError, TypeError) as error:
                problems.append(f"line {line}: {column} {text!r} is not valid: {error}")
                row_ok = False
        numbers: dict[str, tuple[float, ...]] = {}
        for m, cols in table.items():
            cells: list[float] = []
            for column in cols:
                text = get.get(column, "")
                number = _tabular_value(text)
                if number is None:
                    problems.append(
                        f"line {line}: {column} {text!r} is not a number (tabular modality {m!r}; "
                        "leave the cell empty for a missing value)"
                    )
                    row_ok = False
                    number = math.nan
                cells.append(number)
            numbers[m] = tuple(cells)
        empty = [c for key, c in zip(images, path_columns, strict=True) if paths[key] is None]
        no_values = [m for m, vals in numbers.items() if all(math.isnan(v) for v in vals)]
        if len(empty) == len(path_columns) and len(no_values) == len(table) and (
            path_columns or table
        ):
            what = (
                f"no image (every path column is empty: {', '.join(empty)})" if not table
                else "no modality (every path column is empty"
                + (f": {', '.join(empty)}" if empty else "")
                + f", and no value in the tabular columns of {', '.join(table)})"
            )
            problems.append(f"line {line}: {what}; a pair needs at least one modality")
            row_ok = False
        else:
            probe = ManifestRow(line, patient, label, paths, extra)
            for key, column in zip(images, path_columns, strict=True):
                file = paths[key]
                if file is not None:
                    to_check.append((line, column, file, probe.frame(key) if frames_ok else None))
                elif key in required:
                    problems.append(f"line {line}: empty {column} ({key} is required)")
                    row_ok = False
            for m in no_values:
                if m in required:
                    problems.append(
                        f"line {line}: no {m} value (every one of {', '.join(table[m])} is empty; "
                        f"{m} is required)"
                    )
                    row_ok = False
        if row_ok and not missing:
            rows.append(ManifestRow(line, patient, label, paths, extra, parsed, numbers))

    if verify != "none":
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            found = list(pool.map(lambda item: _file_problem(item[2], item[3], verify, limit),
                                  to_check))  # fmt: skip
        for (line, column, _, _), problem in zip(to_check, found, strict=True):
            if problem is not None:
                problems.append(f"line {line}: {column} {problem}")

    spec = labels
    if spec is None:
        spec = LabelSpec.numbered(max((r.label for r in rows), default=0) + 1)
    problems.extend(_identity_problems(rows))
    by_patient: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_patient[row.patient_id][row.label].append(row.line)
    for patient, found_labels in by_patient.items():
        if len(found_labels) > 1:
            listed = "; ".join(
                f"{spec.names[s]} on line(s) {', '.join(map(str, lines))}"
                for s, lines in sorted(found_labels.items())
            )
            problems.append(f"patient {patient!r} has more than one {label_column}: {listed}")
    if not problems and not rows:
        problems.append("no image pairs (the file has a header but no rows)")
    if problems:
        raise ManifestError(source, problems)
    return Manifest(tuple(rows), modalities, source, spec, table)


def _identity_problems(rows: Sequence[ManifestRow]) -> list[str]:
    """Duplicate rows and images shared by patients, comparing files by their real path (a file
    reached through ``..`` or a symbolic link is one file) and frame (a cine's frames differ).
    Rows without any image file (tabular values only) are not compared."""
    problems: list[str] = []
    real: dict[Path, str] = {}

    def image(path: Path, frame: int | None) -> tuple[str, int | None]:
        if path not in real:
            real[path] = os.path.realpath(path)
        return real[path], frame

    seen: dict[tuple[object, ...], int] = {}
    owner: dict[tuple[str, int | None], tuple[str, int, str]] = {}
    for row in rows:
        if all(p is None for p in row.paths.values()):
            continue
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


def _cell(value: object) -> object:
    """A value as written to a CSV cell: ``None`` and NaN are an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def write_manifest(
    path: str | Path,
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Write a manifest CSV (e.g. for your own data or a phantom): whatever columns it is given.

    Args:
        path: Output CSV path; its folder must exist.
        rows: One mapping per pair with at least the ``columns`` keys. ``None`` and NaN values
            are written as empty cells (a missing modality, a missing tabular value).
        columns: Column order, e.g. ``["patient_id", "us_path", "swe_path", "label"]``;
            ``None``: every key of the rows, in order of first appearance (a row lacking one
            gets an empty cell).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: A row lacks one of the given ``columns`` (the message names the row and
            the columns), or ``columns`` is empty.
    """
    out = Path(path)
    if columns is None:
        order: dict[str, None] = {}
        for row in rows:
            order.update(dict.fromkeys(row))
        names, fill = list(order), True
    else:
        names, fill = list(columns), False
    if not names:
        raise ValueError("columns: expected at least one column name, got none")
    for i, row in enumerate(rows):
        lacking = [c for c in names if c not in row]
        if lacking and not fill:
            raise ValueError(f"rows: row {i} lacks the column(s) {lacking}")
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in names})
    return out
