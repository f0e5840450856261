"""Exact ceilings of the interaction phantom (issue 28): joint, late fusion, each modality alone or
removed, per view and per patient.

The observation model is the idealised reader of :func:`~mmfusion.liver.phantom.bayes_ceiling`
(it reads every view perfectly), extended by the decoy of
:mod:`~mmfusion.liver.phantom.interaction` and by lab values. For a patient of stage ``c``
(notation of :class:`~mmfusion.liver.phantom.PhantomConfig`; all stiffness values in log kPa):

- latents ``L ~ N(mu_c, sigma_c^2)`` (``mu_c = log stiffness_median_kpa[c]``, ``sigma_c =
  stiffness_log_sigma[c]``) and ``T ~ N(m_c, tau^2)`` (``texture_mean``, ``texture_sd``);
- view ``v`` of ``n``: liver stiffness ``l_v = L + e_v``, ``e_v ~ N(0, delta^2)``
  (``view_stiffness_log_sd``) and texture ``t_v = T + h_v``, ``h_v ~ N(0, kappa^2)``
  (``view_texture_sd``);
- the patient's decoy ``Z ~ N(zeta, s^2)`` (``zeta = log decoy_median_kpa``, ``s =
  decoy_log_sigma``), stage-independent; with probability ``rho`` (``decoy_share``) view ``v`` has
  the decoy, at ``z_v = Z + f_v``, ``f_v ~ N(0, delta^2)`` (the liver's per-view variation),
  covering a share ``u_v ~ U(a, b)`` (``decoy_cover``) of the SWE box; the liver covers ``1 -
  u_v``.
- labs (optional): ``p(labs | c)`` of :func:`mmfusion.liver.labs.labs_log_likelihood`, one draw
  per patient (:func:`~mmfusion.liver.labs.sample_labs`), a share ``labs_missing_share`` of
  patients without labs (likelihood 1).

What each modality shows: US shows the texture ``t_v`` and, in a decoy view, which SWE region is
the decoy (the region is drawn in B-mode only). SWE shows each coloured region's value and share:
one region ``(l_v, 1)`` or two regions ``{(l_v, 1 - u_v), (z_v, u_v)}`` without saying which is
which (so a view with a decoy is itself observed). Labs show the four values.

Likelihoods (class-independent factors dropped, they cancel in the argmax). Gaussian conjugacy
integrates a shared latent out exactly: for ``n`` values ``x_1..x_n`` around one latent ``X ~
N(m, S^2)``,

    prod_v N(x_v; X, delta^2) = C(x) N(xbar; X, delta^2 / n),
    C(x) = (2 pi delta^2)^(-(n - 1) / 2) n^(-1/2) exp(-SS(x) / (2 delta^2)),
    SS(x) = sum_v (x_v - xbar)^2,

    p(x) = C(x) N(xbar; m, S^2 + delta^2 / n),

the same for texture (``p(t | c) ∝ N(tbar; m_c, tau^2 + kappa^2 / n)``). With ``n = 1`` this is
the per-view likelihood ``N(x; m, S^2 + delta^2)``.

- SWE, assignment known (the joint observer reads it from B-mode): ``p_known(SWE | c) ∝
  N(lbar; mu_c, sigma_c^2 + delta^2 / n)`` over the ``n`` liver values; the ``k`` decoy values'
  factor ``C(z) N(zbar; zeta, s^2 + delta^2 / k)`` is the same for every stage and drops out.
- SWE, assignment unknown (SWE alone, the late observer): a mixture over the ``2^k`` assignments
  ``a`` of the ``k`` decoy views. Write a decoy view's regions as ``R1 = (x1, 1 - u)``, ``R2 =
  (x2, u)``; assignment ``a_v = 0`` says "R1 is liver, R2 the decoy" (share weight ``h(u)``),
  ``a_v = 1`` says "R2 is liver" (``h(1 - u)``), ``h`` = ``U(a, b)``'s density (a region whose
  share is outside ``[a, b]`` cannot be the decoy; with the default symmetric ``(0.3, 0.7)``,
  ``h(u) = h(1 - u)``: the shares carry no clue). With ``x(a)`` the ``n`` liver values and
  ``z(a)`` the ``k`` decoy values under ``a`` (non-decoy views: their one value is liver),

      p(SWE | c) ∝ sum_a [prod_v h_{a_v}] exp(-(SS(x(a)) + SS(z(a))) / (2 delta^2))
                   N(zbar(a); zeta, s^2 + delta^2 / k) N(xbar(a); mu_c, sigma_c^2 + delta^2 / n),

  both latents (the liver's ``L``, stage prior; the decoy's ``Z``, decoy prior) integrated out.
  The factors ``rho`` (or ``1 - rho``), 1/2 (the random order of the two regions) and the
  constants of ``C`` are the same for every ``a`` and ``c``. Because the liver's and the decoy's
  values each agree across the views, fusing a patient's views finds the two consistent groups;
  which group is the liver only the priors (and other modalities' evidence about ``c``) tell: at
  ``rho = 1`` the two groups are statistically alike except for their priors.

Observers (``argmax_c log prior_c + sum of the log likelihoods they use``): ``joint`` = US + SWE
known + labs; ``late`` = US + SWE mixture + labs (the product of per-modality likelihoods; it
cannot see which SWE region is the decoy); ``us``, ``swe`` (mixture), ``labs`` alone;
``no_us`` = SWE mixture + labs (without B-mode nothing says where the decoy is), ``no_swe`` = US +
labs, ``no_labs`` = US + SWE known. Without labs (``labs=False``) the labs modality carries no
information: ``labs`` is the accuracy of the prior alone and ``no_labs`` equals ``joint``.

Because the modalities are conditionally independent given the stage, ``late`` is the Bayes
classifier given all observations except the assignment, ``joint`` the one given all of them: at
``rho = 0`` they coincide (with the same draws they are computed identically), at ``rho > 0``
``late < joint`` by the value of knowing where the decoy is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmfusion.liver.phantom.ceiling import _check_prior
from mmfusion.liver.phantom.cohort import sample_latents
from mmfusion.liver.phantom.config import PhantomConfig

__all__ = [
    "OBSERVERS",
    "CeilingDraws",
    "interaction_ceilings",
    "modality_log_likelihoods",
    "simulate_observations",
]

#: The observers of :func:`interaction_ceilings`, in the order of its result.
OBSERVERS: tuple[str, ...] = ("joint", "late", "us", "swe", "labs", "no_us", "no_swe", "no_labs")

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK = 8192  # patients per block of the assignment sum (128 x 8192 x 5 float64: 42 MB)


@dataclass(frozen=True, eq=False)
class CeilingDraws:
    """Simulated patients and what their views show (``V`` = the most views of any patient).

    Attributes:
        stages: ``[N]`` int stages.
        valid: ``[N, V]`` bool, True for the patient's views (padding False).
        texture: ``[N, V]`` texture score of each view.
        liver: ``[N, V]`` log kPa of the liver region of each view.
        decoy: ``[N, V]`` bool, True where the view has a decoy.
        decoy_value: ``[N, V]`` log kPa of the decoy (the patient's ``Z`` plus the view's
            variation; drawn for every view, used where ``decoy``).
        cover: ``[N, V]`` share of the SWE box the decoy covers (drawn for every view).
        labs: ``{column: [N]}`` lab values (NaN: a patient without labs), or None.
    """

    stages: np.ndarray
    valid: np.ndarray
    texture: np.ndarray
    liver: np.ndarray
    decoy: np.ndarray
    decoy_value: np.ndarray
    cover: np.ndarray
    labs: dict[str, np.ndarray] | None = None


def _class_weights(prior: object, config: PhantomConfig) -> np.ndarray:
    k = len(config.stage_prevalence)
    if prior is None or (isinstance(prior, str) and prior == "cohort"):
        p = np.asarray(config.stage_prevalence, dtype=np.float64)
        return p / p.sum()
    if isinstance(prior, str):
        if prior == "balanced":
            return np.full(k, 1.0 / k)
        raise ValueError(
            f"prior: expected None, 'cohort', 'balanced' or {k} weights, got {prior!r}"
        )
    return _check_prior(prior, k)  # type: ignore[arg-type]


def _views_per_patient(n: int, rng: np.random.Generator, config: PhantomConfig) -> np.ndarray:
    """Views per patient as :func:`~mmfusion.liver.phantom.cohort.sample_cohort` spreads them."""
    lo, hi = config.views_range
    if hi == lo:
        return np.full(n, lo, dtype=np.int64)
    total = min(max(int(round(n * config.pairs_per_patient)), n * lo), n * hi)
    slots = rng.choice(n * (hi - lo), size=total - n * lo, replace=False)
    return lo + np.bincount(slots // (hi - lo), minlength=n)


def simulate_observations(
    config: PhantomConfig,
    n_patients: int,
    rng: np.random.Generator,
    p_class: np.ndarray,
    *,
    per_view: bool,
    labs: bool,
) -> CeilingDraws:
    """Draw patients and their views' observations from the model in the module text.

    Draw order (fixed, so that observers and ``decoy_share`` values see the same patients):
    stages, latents (:func:`~mmfusion.liver.phantom.cohort.sample_latents`), views per patient,
    view noise (stiffness, texture), the decoy uniform of every view, the patients' decoy ``Z``,
    the decoy's view variation and cover of every view, then labs and their missingness.

    Args:
        config: Phantom configuration.
        n_patients: Number of patients ``N``.
        rng: Random generator (consumed).
        p_class: ``[5]`` class probabilities the stages are drawn from.
        per_view: One view per patient (the per-view ceiling) instead of the cohort's 4-7.
        labs: Draw lab values (needs :mod:`mmfusion.liver.labs`).

    Returns:
        The :class:`CeilingDraws`.
    """
    stages = rng.choice(len(p_class), size=n_patients, p=p_class)
    stiffness, texture = sample_latents(stages, rng, config)
    n_views = (np.ones(n_patients, dtype=np.int64) if per_view
               else _views_per_patient(n_patients, rng, config))
    v = int(n_views.max())
    valid = np.arange(v)[None, :] < n_views[:, None]
    noise = rng.standard_normal((n_patients, v))
    liver = np.log(stiffness)[:, None] + config.view_stiffness_log_sd * noise
    tex = texture[:, None] + config.view_texture_sd * rng.standard_normal((n_patients, v))
    decoy = (rng.random((n_patients, v)) < config.decoy_share) & valid
    z = math.log(config.decoy_median_kpa) + config.decoy_log_sigma * rng.standard_normal(n_patients)
    decoy_value = z[:, None] + config.view_stiffness_log_sd * rng.standard_normal((n_patients, v))
    cover = rng.uniform(*config.decoy_cover, size=(n_patients, v))
    lab_values = None
    if labs:
        from mmfusion.liver.labs import LAB_COLUMNS, sample_labs

        lab_values = sample_labs(stages, rng, _lab_model(config))
        missing = rng.random(n_patients) < float(getattr(config, "labs_missing_share", 0.0))
        for column in LAB_COLUMNS:
            lab_values[column][missing] = np.nan
    return CeilingDraws(stages, valid, tex, liver, decoy, decoy_value, cover, lab_values)


def _lab_model(config: PhantomConfig) -> object:
    """The lab distributions (:data:`mmfusion.liver.labs.LAB_MODEL`; the phantom's only model)."""
    from mmfusion.liver.labs import LAB_MODEL

    return LAB_MODEL


def _normal_mean_loglik(
    values: np.ndarray, valid: np.ndarray, mean: np.ndarray, var_latent: np.ndarray, var_view: float
) -> np.ndarray:
    """``log N(xbar; mean_c, var_latent_c + var_view / n)``: ``[N, 5]`` from ``[N, V]`` values."""
    n = valid.sum(axis=1)
    xbar = np.where(valid, values, 0.0).sum(axis=1) / n
    var = var_latent[None, :] + var_view / n[:, None]
    return -0.5 * (_LOG_2PI + np.log(var) + (xbar[:, None] - mean[None, :]) ** 2 / var)


def _gauss(x: np.ndarray, mean: np.ndarray | float, var: np.ndarray) -> np.ndarray:
    """``log N(x; mean, var)``, broadcast."""
    return -0.5 * (_LOG_2PI + np.log(var) + (x - mean) ** 2 / var)


def _log_c(
    values: np.ndarray, use: np.ndarray, count: np.ndarray, d2: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(xbar [N], -SS / (2 delta^2) [N])`` over the entries ``use`` of each row of ``values``
    ``[N, V]`` (``count [N] >= 1`` of them): the parts of ``log C`` that vary between assignments."""
    xbar = np.where(use, values, 0.0).sum(axis=1) / count
    ss = np.where(use, (values - xbar[:, None]) ** 2, 0.0).sum(axis=1)
    return xbar, (-ss / (2 * d2) if d2 > 0 else np.where(ss > 0, -np.inf, 0.0))


def _swe_mixture(draws: CeilingDraws, config: PhantomConfig, known: np.ndarray) -> np.ndarray:
    """The SWE log likelihood with the assignment unknown (module text), ``[N, 5]``.

    Patients without a decoy view keep ``known`` (the same numbers, not recomputed).
    """
    mu = np.log(np.asarray(config.stiffness_median_kpa))
    var_l = np.asarray(config.stiffness_log_sigma) ** 2
    d2 = config.view_stiffness_log_sd**2
    lo, hi = config.decoy_cover
    z_mu, z_var = math.log(config.decoy_median_kpa), config.decoy_log_sigma**2

    def log_h(u: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.where((u >= lo) & (u <= hi), -math.log(hi - lo), -np.inf)

    out = known.copy()
    k = draws.decoy.sum(axis=1)
    rows = np.flatnonzero(k > 0)
    for start in range(0, len(rows), _CHUNK):
        idx = rows[start : start + _CHUNK]
        valid, dec = draws.valid[idx], draws.decoy[idx]
        # decoy views first, so that assignment number a < 2^k spans patient's k decoy views
        order = np.argsort(~dec, axis=1, kind="stable")
        take = np.take_along_axis
        valid, dec = take(valid, order, 1), take(dec, order, 1)
        x1, x2 = take(draws.liver[idx], order, 1), take(draws.decoy_value[idx], order, 1)
        u = take(draws.cover[idx], order, 1)
        h0 = np.where(dec, log_h(u), 0.0)  # "R1 is liver"
        h1 = np.where(dec, log_h(1.0 - u), -np.inf)  # "R2 is liver"
        n, kk = valid.sum(axis=1), k[idx]
        var_x = var_l[None, :] + d2 / n[:, None]
        var_z = z_var + d2 / kk
        terms = np.full((1 << int(kk.max()), len(idx), len(mu)), -np.inf)
        for a in range(len(terms)):
            bits = ((a >> np.arange(valid.shape[1])) & 1).astype(bool)[None, :]
            xbar, log_cx = _log_c(np.where(bits, x2, x1), valid, n, d2)
            zbar, log_cz = _log_c(np.where(bits, x1, x2), dec, np.maximum(kk, 1), d2)
            logw = np.where(bits, h1, h0).sum(axis=1) + log_cx + log_cz + _gauss(zbar, z_mu, var_z)
            ll = _gauss(xbar[:, None], mu[None, :], var_x)
            terms[a] = np.where((a < (1 << kk))[:, None], logw[:, None] + ll, -np.inf)
        top = terms.max(axis=0)
        out[idx] = top + np.log(np.exp(terms - top[None]).sum(axis=0))
    return out


def modality_log_likelihoods(draws: CeilingDraws, config: PhantomConfig) -> dict[str, np.ndarray]:
    """Each modality's log likelihood per patient and stage (class-independent factors dropped).

    Args:
        draws: Observations (:func:`simulate_observations`).
        config: The configuration they were drawn with.

    Returns:
        ``{"us", "swe_known", "swe", "labs": [N, 5]}``: texture; SWE with the decoy assignment
        known (from B-mode); SWE alone (mixture over assignments); labs (zeros without labs).
    """
    t_mu = np.asarray(config.texture_mean, dtype=np.float64)
    us = _normal_mean_loglik(
        draws.texture, draws.valid, t_mu, np.full(len(t_mu), config.texture_sd**2),
        config.view_texture_sd**2,
    )
    known = _normal_mean_loglik(
        draws.liver, draws.valid, np.log(np.asarray(config.stiffness_median_kpa)),
        np.asarray(config.stiffness_log_sigma) ** 2, config.view_stiffness_log_sd**2,
    )
    swe = _swe_mixture(draws, config, known)
    if draws.labs is None:
        lab = np.zeros_like(us)
    else:
        from mmfusion.liver.labs import labs_log_likelihood

        lab = labs_log_likelihood(draws.labs, _lab_model(config))
    return {"us": us, "swe_known": known, "swe": swe, "labs": lab}


#: Which log likelihoods each observer adds up.
_USES: dict[str, tuple[str, ...]] = {
    "joint": ("us", "swe_known", "labs"),
    "late": ("us", "swe", "labs"),
    "us": ("us",),
    "swe": ("swe",),
    "labs": ("labs",),
    "no_us": ("swe", "labs"),
    "no_swe": ("us", "labs"),
    "no_labs": ("us", "swe_known"),
}


def interaction_ceilings(
    config: PhantomConfig | None = None,
    *,
    n_patients: int = 200_000,
    seed: int = 0,
    prior: str | Sequence[float] | np.ndarray | None = None,
    per_view: bool = False,
    labs: bool | None = None,
) -> dict[str, float]:
    """Monte-Carlo accuracy of the Bayes classifier of each observer (module text).

    Every observer classifies the same simulated patients (common random numbers), so their
    differences are far more precise than each value's standard error, about
    ``sqrt(a (1 - a) / n_patients)`` (0.001 at the default).

    Args:
        config: Phantom configuration (``decoy_*``, ``labs_missing_share``); default if None.
        n_patients: Simulated patients (one view each with ``per_view``).
        seed: Seed of the simulation (stream ``[seed, 28, 100]``).
        prior: Class mix of the evaluated set: None or ``"cohort"`` (``stage_prevalence``),
            ``"balanced"`` (equal), or one weight per stage.
        per_view: Classify one view (with its per-view noise) instead of all of a patient's views.
        labs: Include lab values; None follows ``config.labs``.

    Returns:
        ``{observer: accuracy}`` for :data:`OBSERVERS`. Measured (200,000 patients, seed 0;
        ``interaction_config(rho, weak_texture=...)``; cohort prior / balanced; joint - late at
        ``rho = 1``, in points; at ``rho = 0`` late equals joint exactly):

        - default texture, no labs: per view 2.75 / 2.21 (joint 0.729 / 0.764), per patient
          2.64 / 2.12 (joint 0.738 / 0.773); with labs: per view 2.32 / 1.82, per patient
          2.20 / 1.82 (joint 0.756 / 0.789);
        - weak texture, no labs: per view 5.67 / 5.04 (joint 0.550 / 0.577), per patient
          5.60 / 4.98 (joint 0.555 / 0.583); with labs: per view 4.55 / 3.92, per patient
          4.48 / 3.93 (joint 0.597 / 0.627).

        The gap is about the same per patient as per view: the patient's decoy, like its liver,
        is consistent across views, so more views sharpen both values but do not say which is
        the liver.

    Raises:
        ValueError: ``n_patients`` not a positive int, or a bad ``prior``.
    """
    if not isinstance(n_patients, int) or isinstance(n_patients, bool) or n_patients < 1:
        raise ValueError(f"n_patients: expected a positive int, got {n_patients!r}")
    cfg = config or PhantomConfig()
    if not isinstance(cfg, PhantomConfig):
        raise TypeError(f"config: expected PhantomConfig or None, got {type(config).__name__}")
    use_labs = bool(getattr(cfg, "labs", False)) if labs is None else bool(labs)
    p_class = _class_weights(prior, cfg)
    rng = np.random.default_rng([seed, 28, 100])
    draws = simulate_observations(cfg, n_patients, rng, p_class, per_view=per_view, labs=use_labs)
    ll = modality_log_likelihoods(draws, cfg)
    with np.errstate(divide="ignore"):
        log_prior = np.log(p_class)
    out = {}
    for name in OBSERVERS:
        score = log_prior[None, :] + sum(ll[m] for m in _USES[name])
        out[name] = float(np.mean(score.argmax(axis=1) == draws.stages))
    return out
