"""Encoder of a tabular modality: a fixed list of named numeric values, some of them missing.

A modality need not be an image: lab values (age, AST, ALT, platelets), a questionnaire or a
scanner's measurements arrive as one row of numbers per sample, ``NaN`` where a value is missing.
:class:`TabularEncoder` turns that row into a feature vector that any fusion takes (a vector
modality; the built-in fusions give it a linear embedding). Registered as the encoder
``"tabular"`` (:func:`~mmfusion.nn.create_encoder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmfusion._checks import check_tensor
from mmfusion._values import is_int, is_number, short_repr
from mmfusion.nn._validation import checking
from mmfusion.nn.registry import FeatureSpec, register_encoder


@register_encoder("tabular")
class TabularEncoder(nn.Module):
    """MLP over ``F`` named numeric columns with a missing-value mask.

    ``x -> [(x - mean) / std with NaN -> 0, isnan(x)] -> [Linear -> ReLU -> Dropout] * len(hidden)
    -> Linear -> ReLU``: the values with every missing one replaced by 0, concatenated with the
    mask (1 where the value was missing, 0 elsewhere), so the network can tell a missing value
    from a measured 0. The graph has no data-dependent branch (``torch.isnan`` and ``torch.where``),
    so it exports to ONNX and compiles in one graph.

    Args:
        columns: The column names, in input order (``F = len(columns)``), e.g.
            ``("age", "ast", "alt", "platelets")``.
        hidden: Widths of the hidden layers (``()``: one linear layer to ``out_features``).
        out_features: Size ``D`` of the output vector.
        dropout: Dropout probability after each hidden layer.
        mean: Optional per-column values subtracted before anything else (e.g. the training
            set's means), so that columns of very different scales train together; ``None``: 0.
        std: Optional per-column positive scales the centred values are divided by; ``None``: 1.

    Attributes:
        columns: The column names.
        in_features: ``F``.
        out_features: ``D``.

    Shape:
        - Input: ``[B, F]`` floating point, ``NaN`` where a value is missing (not infinite).
        - Output: ``[B, out_features]`` (non-negative, after the last ReLU).

    Example:
        >>> enc = TabularEncoder(("age", "ast", "alt"), hidden=(16,), out_features=8)
        >>> x = torch.tensor([[54.0, 40.0, float("nan")], [61.0, float("nan"), float("nan")]])
        >>> enc(x).shape, enc.feature_spec()
        (torch.Size([2, 8]), FeatureSpec(kind='vector', channels=8, spatial=None))
        >>> enc.prepare(x)[1].tolist()  # values (NaN -> 0), then the mask
        [61.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    """

    def __init__(
        self,
        columns: Sequence[str],
        hidden: Sequence[int] = (64,),
        out_features: int = 64,
        dropout: float = 0.0,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        names = "a non-empty sequence of distinct non-empty column names"
        if isinstance(columns, str) or not isinstance(columns, Sequence):
            raise ValueError(f"columns: expected {names}, got {short_repr(columns)}")
        cols = tuple(columns)
        if not (cols and all(isinstance(c, str) and c for c in cols) and len(set(cols)) == len(cols)):
            raise ValueError(f"columns: expected {names}, got {short_repr(columns)}")
        if isinstance(hidden, str) or not isinstance(hidden, Sequence) or not all(
            is_int(h) and h >= 1 for h in hidden
        ):
            raise ValueError(f"hidden: expected a sequence of positive ints, got {short_repr(hidden)}")
        if not (is_int(out_features) and out_features >= 1):
            raise ValueError(f"out_features: expected a positive int, got {short_repr(out_features)}")
        if not (is_number(dropout) and 0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout: expected a probability in [0, 1), got {short_repr(dropout)}")
        self.columns: tuple[str, ...] = cols
        self.in_features = len(cols)
        self.out_features = int(out_features)
        self.register_buffer("mean", self._per_column(mean, "mean", 0.0, positive=False))
        self.register_buffer("std", self._per_column(std, "std", 1.0, positive=True))
        layers: list[nn.Module] = []
        width = 2 * self.in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = int(h)
        layers += [nn.Linear(width, self.out_features), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)

    def _per_column(
        self, values: Sequence[float] | None, name: str, default: float, *, positive: bool
    ) -> Tensor:
        if values is None:
            return torch.full((self.in_features,), default)
        what = f"{self.in_features} finite{' positive' if positive else ''} numbers (one per column)"
        ok = (
            not isinstance(values, str)
            and isinstance(values, Sequence)
            and len(values) == self.in_features
            and all(is_number(v) for v in values)
        )
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float32) if ok else None
        if tensor is None or not bool(torch.isfinite(tensor).all()) or (
            positive and not bool((tensor > 0).all())
        ):
            raise ValueError(f"{name}: expected {what}, got {short_repr(values)}")
        return tensor

    def feature_spec(self, image_size: object = None) -> FeatureSpec:
        """What the encoder gives: a vector of ``out_features`` (``image_size`` is ignored)."""
        return FeatureSpec("vector", self.out_features)

    def input_shape(self, image_size: object = None) -> tuple[int]:
        """One sample's input shape ``(F,)`` (``image_size`` is ignored)."""
        return (self.in_features,)

    def check_input(self, x: object, name: str = "x") -> None:
        """Check one batch of rows (what :meth:`forward` checks when called directly).

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not ``[B, F]``; the message names ``name`` and the columns.
        """
        check_tensor(x, name, ndim=2)
        if x.shape[1] != self.in_features:  # type: ignore[union-attr]
            raise ValueError(
                f"{name}: expected {self.in_features} columns {list(self.columns)} "
                f"([B, {self.in_features}]), got shape {tuple(x.shape)}"  # type: ignore[union-attr]
            )

    def prepare(self, x: Tensor) -> Tensor:
        """The MLP's input: standardised values with ``NaN`` -> 0, then the missing-value mask.

        Args:
            x: ``[B, F]`` rows, ``NaN`` where missing.

        Returns:
            ``[B, 2F]``: ``[(x - mean) / std with NaN -> 0, isnan(x) as 0/1]``.
        """
        missing = torch.isnan(x)
        scaled = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        values = torch.where(missing, torch.zeros_like(scaled), scaled)
        return torch.cat([values, missing.to(x.dtype)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Encode a batch of rows.

        Args:
            x: ``[B, F]`` floating point, ``NaN`` where a value is missing.

        Returns:
            ``[B, out_features]`` feature vectors.
        """
        if checking():  # not again inside MultiModalClassifier, which has checked its inputs
            self.check_input(x, "x")
        return self.mlp(self.prepare(x))

    def extra_repr(self) -> str:
        return f"columns={list(self.columns)}"
