"""A non-deep baseline: stiffness and texture statistics -> multinomial logistic regression.

What a deep fusion model must beat besides the cut-offs of :mod:`mmfusion.liver.cutoffs`: eight
hand-made numbers per image pair and a linear classifier (scikit-learn, standardised features).

Features (:data:`FEATURE_NAMES`), all read inside the SWE colour box (found by
:func:`mmfusion.elastography.detect_swe_box` unless given). The B-mode statistics use the same
rectangle of the B-mode frame: the two frames of a pair show the same anatomy at the same pixel
positions (dual display; the phantom's pairs share their geometry), so this is the liver tissue
the stiffness was measured in.

- ``swe_median_kpa``, ``swe_iqr_kpa``: median and interquartile range of the decoded stiffness
  (:func:`mmfusion.elastography.decode_swe_kpa`), void pixels left out.
- ``swe_valid_fraction``: share of colour-coded pixels in the box.
- ``us_mean``, ``us_sd``: mean and standard deviation of the B-mode grey levels.
- ``us_local_sd``: mean local standard deviation in a window of ``min(H, W) / 60`` pixels (speckle
  and fine texture).
- ``us_coarse_sd``: standard deviation after a Gaussian blur of sigma ``min(H, W) / 200`` pixels,
  which averages speckle out and keeps coarse echo heterogeneity (septa, nodules).
- ``us_gradient_energy``: mean squared Sobel gradient of that blurred image (edges of structures).

Window sizes scale with the frame, so features of frames of different sizes are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfusion.elastography.colour import decode_swe_kpa, detect_swe_box
from mmfusion.liver.stages import NUM_STAGES

__all__ = ["FEATURE_NAMES", "LogisticBaseline", "baseline_features", "pair_features", "pair_inputs"]

#: Names of the columns of :func:`baseline_features`, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "swe_median_kpa",
    "swe_iqr_kpa",
    "swe_valid_fraction",
    "us_mean",
    "us_sd",
    "us_local_sd",
    "us_coarse_sd",
    "us_gradient_energy",
)


def _as_grey(us: Any) -> np.ndarray:
    if not isinstance(us, np.ndarray) or us.dtype != np.uint8:
        kind = f"dtype {us.dtype}" if isinstance(us, np.ndarray) else type(us).__name__
        raise TypeError(f"us: expected a uint8 numpy array [H, W] or [H, W, 3], got {kind}")
    if us.ndim == 3 and us.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(us), cv2.COLOR_RGB2GRAY)
    if us.ndim == 2:
        return us
    raise ValueError(f"us: expected [H, W] (grey) or [H, W, 3] (RGB), got shape {us.shape}")


def _bmode_statistics(grey: np.ndarray, box: tuple[int, int, int, int]) -> list[float]:
    h, w = grey.shape
    x0, y0, x1, y1 = box
    image = grey.astype(np.float32)
    k = max(3, int(round(min(h, w) / 60)) | 1)
    mean = cv2.blur(image, (k, k))
    local_var = np.maximum(cv2.blur(image * image, (k, k)) - mean * mean, 0.0)
    coarse = cv2.GaussianBlur(image, (0, 0), max(1.0, min(h, w) / 200))
    gx = cv2.Sobel(coarse, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(coarse, cv2.CV_32F, 0, 1)
    crop = (slice(y0, y1), slice(x0, x1))
    return [
        float(image[crop].mean()),
        float(image[crop].std()),
        float(np.sqrt(local_var[crop]).mean()),
        float(coarse[crop].std()),
        float((gx[crop] ** 2 + gy[crop] ** 2).mean()),
    ]


def pair_features(
    us: np.ndarray,
    swe: np.ndarray,
    *,
    box: tuple[int, int, int, int] | None = None,
    kpa_range: tuple[float, float] = (0.0, 40.0),
    colormap: str | np.ndarray = "jet",
    us_box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The baseline's features of one image pair.

    Args:
        us: B-mode frame, uint8 ``[H, W]`` or RGB ``[H, W, 3]``.
        swe: SWE frame, uint8 RGB ``[H, W, 3]``, same ``H, W`` as ``us``.
        box: ``(x0, y0, x1, y1)`` end-exclusive SWE colour box; detected if None.
        kpa_range: The colour scale's range in kPa (see
            :func:`mmfusion.elastography.decode_swe_kpa`).
        colormap: The colour scale (see :func:`mmfusion.elastography.decode_swe_kpa`; e.g. the
            frame's own legend read by :func:`mmfusion.elastography.colour_bar_lut`).
        us_box: Where the B-mode statistics are taken in ``us``; None: ``box`` (the same place,
            right when both frames show the fan at the same position; a dual-view SWE screen
            shows it elsewhere).

    Returns:
        ``[F]`` float64 features in the order of :data:`FEATURE_NAMES`.

    Raises:
        TypeError: ``us`` or ``swe`` is not a uint8 array.
        ValueError: Shapes differ, no colour box is found (pass ``box``), or the box holds no
            colour-coded pixel.
    """
    grey = _as_grey(us)
    if not isinstance(swe, np.ndarray) or swe.shape[:2] != grey.shape:
        shape = getattr(swe, "shape", type(swe).__name__)
        raise ValueError(f"swe: expected [H, W, 3] with (H, W) = {grey.shape} (us), got {shape}")
    if box is None:
        box = detect_swe_box(swe)
        if box is None:
            raise ValueError("swe: no colour box found in the frame; pass box=(x0, y0, x1, y1)")
    kpa = decode_swe_kpa(swe, kpa_range, colormap, box=box)
    valid = kpa[np.isfinite(kpa)]
    if valid.size == 0:
        raise ValueError(f"swe: the box {tuple(box)} holds no colour-coded pixel")
    q1, median, q3 = np.percentile(valid, [25, 50, 75])
    swe_part = [float(median), float(q3 - q1), valid.size / kpa.size]
    region = tuple(box) if us_box is None else tuple(us_box)
    return np.array(swe_part + _bmode_statistics(grey, region), dtype=np.float64)


def baseline_features(
    us_images: Sequence[np.ndarray],
    swe_images: Sequence[np.ndarray],
    *,
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    kpa_range: tuple[float, float] = (0.0, 40.0),
    colormap: str | np.ndarray = "jet",
) -> np.ndarray:
    """The feature table of many image pairs (one row per pair, see :func:`pair_features`).

    Args:
        us_images: ``N`` B-mode frames.
        swe_images: ``N`` SWE frames, paired with ``us_images``.
        boxes: ``N`` SWE boxes (None entries are detected); None detects all.
        kpa_range: The colour scale's range in kPa.
        colormap: The colour scale.

    Returns:
        ``[N, F]`` float64 table, columns :data:`FEATURE_NAMES`.

    Raises:
        ValueError: Lengths differ or ``N == 0``; or as :func:`pair_features`, with the pair's
            index in the message.
    """
    n = len(us_images)
    if n == 0 or len(swe_images) != n or (boxes is not None and len(boxes) != n):
        got = (n, len(swe_images), None if boxes is None else len(boxes))
        raise ValueError(
            f"us_images, swe_images, boxes: expected the same positive length, got {got}"
        )
    rows = []
    for i in range(n):
        try:
            rows.append(
                pair_features(
                    us_images[i],
                    swe_images[i],
                    box=None if boxes is None else boxes[i],
                    kpa_range=kpa_range,
                    colormap=colormap,
                )
            )
        except (TypeError, ValueError) as error:
            raise type(error)(f"pair {i}: {error}") from error
    return np.stack(rows)


class LogisticBaseline:
    """Standardised features -> multinomial logistic regression (scikit-learn), ``K`` classes.

    Args:
        num_classes: Number of classes ``K`` of :meth:`predict_proba`'s columns (5 stages); a
            class absent from the training labels gets probability 0.
        C: Inverse L2 regularisation strength of ``LogisticRegression``.
        max_iter: Iterations of the L-BFGS solver.

    Attributes:
        pipeline: The fitted ``StandardScaler -> LogisticRegression`` pipeline (None before
            :meth:`fit`).

    Example:
        >>> x = np.array([[5.0], [5.5], [6.0], [12.0], [13.0], [14.0]])
        >>> model = LogisticBaseline().fit(x, [0, 0, 0, 4, 4, 4])
        >>> model.predict(np.array([[5.2], [13.5]])).tolist()
        [0, 4]
    """

    def __init__(self, num_classes: int = NUM_STAGES, C: float = 1.0, max_iter: int = 1000) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.pipeline: Pipeline | None = None

    def _features(self, features: Any) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"features: expected a 2-D table [N, F], got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features: expected finite values, got NaN/inf")
        return x

    def fit(self, features: Any, labels: Any) -> LogisticBaseline:
        """Fit on ``[N, F]`` features and ``[N]`` integer labels in ``0..K-1``; returns self."""
        x = self._features(features)
        y = np.asarray(labels)
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"labels: expected {x.shape[0]} integer labels (one per row), got shape {y.shape} "
                f"dtype {y.dtype}"
            )
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(
                f"labels: expected values in 0..{self.num_classes - 1}, got {y.min()}..{y.max()}"
            )
        if len(np.unique(y)) < 2:
            raise ValueError(f"labels: expected at least 2 distinct classes, got only {y[0]}")
        self.pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter)
        )
        self.pipeline.fit(x, y)
        return self

    def predict_proba(self, features: Any) -> np.ndarray:
        """``[N, K]`` class probabilities (rows sum to 1) of ``[N, F]`` features."""
        if self.pipeline is None:
            raise RuntimeError("LogisticBaseline: call fit() before predict_proba()")
        x = self._features(features)
        n_features = self.pipeline[0].n_features_in_
        if x.shape[1] != n_features:
            raise ValueError(
                f"features: expected {n_features} columns (as in fit), got {x.shape[1]}"
            )
        probs = np.zeros((x.shape[0], self.num_classes))
        probs[:, self.pipeline.classes_] = self.pipeline.predict_proba(x)
        return probs

    def predict(self, features: Any) -> np.ndarray:
        """``[N]`` int64 predicted classes (arg-max of :meth:`predict_proba`)."""
        return self.predict_proba(features).argmax(axis=1).astype(np.int64)


def pair_inputs(row: Any, kpa_max: float = 40.0) -> dict[str, Any]:
    """The arguments of :func:`pair_features` for one manifest row (with ``us`` and ``swe`` images).

    Reads both frames, detects the SWE colour box and its legend (the colour scale), takes the
    scale's top from the row's ``swe_scale_kpa`` column or ``kpa_max``, and maps the SWE box onto
    the B-mode frame through both frames' ROIs (a dual-view screen shows its fans side by side).

    Returns:
        ``{"us", "swe", "box", "colormap", "kpa_range", "us_box"}``.

    Raises:
        ValueError: The SWE frame has no colour box or no legend (the message names the file and
            its manifest line).
    """
    from mmfusion.data import image_roi, load_image
    from mmfusion.elastography import colour_bar_lut, detect_colour_bar, swe_scale_kpa

    us, swe = load_image(row.paths["us"]), load_image(row.paths["swe"])
    box, bar = detect_swe_box(swe), detect_colour_bar(swe)
    if box is None or bar is None:
        raise ValueError(f"{row.paths['swe']} (line {row.line}) has no "
                         f"{'colour box' if box is None else 'colour bar (legend)'}")
    sx0, sy0, _, _ = image_roi(row.paths["swe"], image=swe).roi.bbox
    ux0, uy0, _, _ = image_roi(row.paths["us"], image=us).roi.bbox
    x0, y0, x1, y1 = box
    dx, dy = ux0 - sx0, uy0 - sy0
    return {"us": us, "swe": swe, "box": box, "colormap": colour_bar_lut(swe, bar),
            "kpa_range": (0.0, swe_scale_kpa(row) or kpa_max), "us_box": (x0 + dx, y0 + dy, x1 + dx, y1 + dy)}
