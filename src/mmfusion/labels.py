"""Label specifications: what a manifest's label column holds and how the metrics report it.

A :class:`LabelSpec` names the classes of a problem in index order, says which manifest column
holds the label and how a cell is spelled, and, for ordered (ordinal) classes, which binary
cut-offs to report. It is the one source of truth for a label set: :func:`mmfusion.data.read_manifest`
parses the column with it, the splits name classes with it, and
:func:`mmfusion.metrics.classification_report` takes its class names and cut-offs from it.

A three-class nominal problem::

    LabelSpec(("normal", "benign", "malignant"))

An ordinal one, with the cut-offs a clinician reads (the liver's METAVIR stages are
``mmfusion.liver.METAVIR``, built the same way)::

    LabelSpec(("F0", "F1", "F2", "F3", "F4"), column="stage",
              aliases={"0": 0, "1": 1, "2": 2, "3": 3, "4": 4},
              cutoffs={"f2plus": 2, "f3plus": 3, "f4": 4}, ordinal=True)

This module imports nothing heavy (no torch, no NumPy): a domain package can define its label set
at import time for free.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmfusion._values import is_int, short_repr

__all__ = ["LabelSpec"]

_CUTOFF_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_FIELDS = ("names", "column", "aliases", "cutoffs", "ordinal")


class _Frozen(Mapping[str, int]):
    """A read-only ``str -> int`` mapping (hashable, picklable, equal to a dict of its items)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, int]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> int:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return repr(self._items)

    def __reduce__(self) -> tuple[Any, ...]:
        return _Frozen, (self._items,)


def _key(text: str) -> str:
    """How a spelling is compared: stripped, case-folded."""
    return text.strip().casefold()


@dataclass(frozen=True)
class LabelSpec:
    """The classes of a classification problem and how a manifest writes them.

    Args:
        names: Class names in index order (class ``i`` is ``names[i]``), e.g.
            ``("normal", "benign", "malignant")``; at least one, unique ignoring case, none empty.
        column: The manifest column that holds the label (``"label"``; the liver's is
            ``"stage"``).
        aliases: Extra accepted spellings -> class index, compared ignoring case and surrounding
            spaces, e.g. ``{"0": 0, "1": 1}`` for a manifest that writes indices.
        cutoffs: Binary cut-offs to report, ordinal problems only: report key -> the first
            class index counted positive (``1 .. K-1``). :func:`mmfusion.metrics.classification_report`
            writes the AUROC of "class >= c" as ``auc_<key>``; the liver's
            ``{"f2plus": 2, "f3plus": 3, "f4": 4}`` gives ``auc_f2plus``, ``auc_f3plus``,
            ``auc_f4``. Keys are letters, digits and underscores.
        ordinal: The classes are ordered (``names[0] < names[1] < ...``): the quadratic-weighted
            kappa and the cut-off AUROCs are meaningful. A nominal problem (``False``) reports
            neither.

    Raises:
        ValueError: A field out of range; the message names the field, what was expected and
            what came.

    Example:
        >>> spec = LabelSpec(("normal", "benign", "malignant"), aliases={"b": 1})
        >>> spec.parse("Benign"), spec.parse(" B "), spec.parse(2), spec.name(0), spec.num_classes
        (1, 1, 2, 'normal', 3)
        >>> LabelSpec.from_dict(spec.to_dict()) == spec
        True
    """

    names: tuple[str, ...]
    column: str = "label"
    aliases: Mapping[str, int] = field(default_factory=dict)
    cutoffs: Mapping[str, int] = field(default_factory=dict)
    ordinal: bool = False

    def __post_init__(self) -> None:
        names = self.names
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise ValueError(
                f"names: expected a non-empty sequence of class names, got {short_repr(names)}"
            )
        bad = [n for n in names if not isinstance(n, str) or not n.strip() or n != n.strip()]
        if bad:
            raise ValueError(
                f"names: expected non-empty strings without surrounding spaces, got "
                f"{short_repr(bad[0])}"
            )
        seen: dict[str, str] = {}
        for name in names:
            if _key(name) in seen:
                raise ValueError(
                    f"names: expected unique names (ignoring case), got {seen[_key(name)]!r} and "
                    f"{name!r}"
                )
            seen[_key(name)] = name
        object.__setattr__(self, "names", tuple(names))
        k = len(names)
        if not isinstance(self.column, str) or not self.column.strip():
            raise ValueError(f"column: expected a column name, got {short_repr(self.column)}")
        if self.column != self.column.strip() or self.column == "patient_id" or (
            self.column.endswith("_path")
        ):
            raise ValueError(
                f"column: expected the name of a label column (not 'patient_id', not a "
                f"'<modality>_path' column, no surrounding spaces), got {self.column!r}"
            )
        if not isinstance(self.ordinal, bool):
            raise ValueError(f"ordinal: expected True or False, got {short_repr(self.ordinal)}")
        aliases = self._mapping(self.aliases, "aliases", 0, k - 1)
        for alias, index in aliases.items():
            if not alias.strip():
                raise ValueError(f"aliases: expected non-empty spellings, got {alias!r}")
            named = seen.get(_key(alias))
            if named is not None and self.names.index(named) != index:
                raise ValueError(
                    f"aliases: {alias!r} -> {index} contradicts the class name {named!r} "
                    f"(index {self.names.index(named)})"
                )
        by_key: dict[str, tuple[str, int]] = {}
        for alias, index in aliases.items():
            first = by_key.setdefault(_key(alias), (alias, index))
            if first[1] != index:
                raise ValueError(
                    f"aliases: {first[0]!r} -> {first[1]} and {alias!r} -> {index} are one "
                    "spelling (case and spaces are ignored) for two classes"
                )
        object.__setattr__(self, "aliases", _Frozen(aliases))
        cutoffs = self._mapping(self.cutoffs, "cutoffs", 1, k - 1)
        if cutoffs and not self.ordinal:
            raise ValueError(
                f"cutoffs: cut-offs ('class >= c') need ordered classes; got {dict(cutoffs)} with "
                "ordinal=False (pass ordinal=True, or no cutoffs)"
            )
        bad_keys = [key for key in cutoffs if not _CUTOFF_KEY.match(key)]
        if bad_keys:
            raise ValueError(
                f"cutoffs: expected keys of letters, digits and underscores (they become report "
                f"keys auc_<key>), got {bad_keys[0]!r}"
            )
        object.__setattr__(self, "cutoffs", _Frozen(cutoffs))
        lookup = {_key(name): i for i, name in enumerate(self.names)}
        for alias, index in aliases.items():
            lookup.setdefault(_key(alias), index)
        object.__setattr__(self, "_lookup", lookup)

    @staticmethod
    def _mapping(value: object, name: str, low: int, high: int) -> dict[str, int]:
        """``value`` as a ``str -> int`` dict with every int in ``[low, high]``."""
        if not isinstance(value, Mapping):
            raise ValueError(f"{name}: expected a mapping of str -> class index, got "
                             f"{short_repr(value)}")  # fmt: skip
        out: dict[str, int] = {}
        for key, index in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{name}: expected string keys, got {short_repr(key)}")
            if not (is_int(index) and low <= index <= high):
                raise ValueError(
                    f"{name}: expected {key!r} -> an int in [{low}, {high}], got {short_repr(index)}"
                )
            out[key] = int(index)  # type: ignore[call-overload]
        return out

    def __hash__(self) -> int:
        return hash((self.names, self.column, self.aliases, self.cutoffs, self.ordinal))

    @property
    def num_classes(self) -> int:
        """``K``, the number of classes."""
        return len(self.names)

    def parse(self, text: str | int) -> int:
        """The class index of one label cell.

        Args:
            text: A class name or an alias (ignoring case and surrounding spaces), or a Python
                ``int`` class index. Digit strings are read as names or aliases only (give
                ``aliases={"0": 0, ...}`` for a manifest that writes indices), so a name that is a
                number (e.g. BI-RADS ``"3"``) is never mistaken for an index.

        Returns:
            The index in ``0 .. K-1``.

        Raises:
            ValueError: An unknown spelling or an index out of range; the message names the
                spec's ``column`` and lists the accepted spellings.
        """
        if is_int(text):
            if 0 <= text < self.num_classes:  # type: ignore[operator]
                return int(text)  # type: ignore[call-overload]
        elif isinstance(text, str):
            index = self._lookup.get(_key(text))  # type: ignore[attr-defined]
            if index is not None:
                return int(index)
        raise ValueError(f"{self.column}: expected {self.expected()}, got {short_repr(text)}")

    def expected(self) -> str:
        """The accepted spellings, for messages: ``"one of F0, F1, ... or 0, 1, ... (any case)"``."""
        shown = ", ".join(self.names[:12]) + (", ..." if self.num_classes > 12 else "")
        extra = [a for a in self.aliases if _key(a) not in {_key(n) for n in self.names}]
        if extra:
            shown += " or " + ", ".join(extra[:12]) + (", ..." if len(extra) > 12 else "")
        return f"one of {shown} (any case)"

    def name(self, index: int) -> str:
        """The name of class ``index``.

        Raises:
            ValueError: ``index`` is not an int in ``0 .. K-1``.
        """
        if not (is_int(index) and 0 <= index < self.num_classes):  # type: ignore[operator]
            raise ValueError(
                f"index: expected a class index in [0, {self.num_classes - 1}], got "
                f"{short_repr(index)}"
            )
        return self.names[int(index)]  # type: ignore[call-overload]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"names": [...], "column", "aliases": {...}, "cutoffs": {...},
        "ordinal"}`` (what a checkpoint's hyperparameters hold)."""
        return {
            "names": list(self.names),
            "column": self.column,
            "aliases": dict(self.aliases),
            "cutoffs": dict(self.cutoffs),
            "ordinal": self.ordinal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpec:
        """The spec of :meth:`to_dict`'s dict (missing keys take their defaults).

        Raises:
            ValueError: ``data`` is not a mapping, has unknown keys, or a value out of range.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"data: expected a mapping (LabelSpec.to_dict()), got {short_repr(data)}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"data: unknown key(s) {unknown}; expected keys from {list(_FIELDS)}")
        if "names" not in data:
            raise ValueError("data: missing key 'names' (the class names)")
        names = data["names"]
        if isinstance(names, list):
            names = tuple(names)
        return cls(**{**data, "names": names})

    @classmethod
    def numbered(cls, num_classes: int, *, column: str = "label", ordinal: bool = False) -> LabelSpec:
        """Classes named by their index, ``"0" .. "K-1"`` (what a manifest read without a spec
        gets from a ``label`` column of integers).

        Raises:
            ValueError: ``num_classes`` is not an int >= 1.
        """
        if not (is_int(num_classes) and num_classes >= 1):  # type: ignore[operator]
            raise ValueError(f"num_classes: expected an int >= 1, got {short_repr(num_classes)}")
        return cls(tuple(str(i) for i in range(int(num_classes))), column=column,  # type: ignore[call-overload]
                   ordinal=ordinal)
