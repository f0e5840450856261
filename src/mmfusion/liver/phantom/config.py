"""Parameters of the liver phantom: cohort, stiffness and texture per stage, image geometry.

The cohort follows the paper (section II.B; docs/paper_map.rst "Decisions"): stage prevalence
162:287:284:197:94 and about 1,414 pairs for 250 patients (5.656 views per patient). Stiffness per
stage is log-normal with the medians of published 2D-SWE studies (docs/paper_map.rst "Decisions"):
F0 5.2, F1 6.2, F2 7.8, F3 9.8, F4 15 kPa; the log-sigmas 0.187-0.244 give the published standard
deviations (1.0, 1.3, 1.8, 2.5 kPa), F4 gets 0.35 (heavy tail, about 8-30 kPa).

The texture latent is a unitless fibrosis-texture score: near 0 for F0-F2 (small steps, nearly
alike in B-mode, as in real life), about 0.55 for F3 (heterogeneous, septa) and 0.85 for F4 (coarse,
nodular, irregular surface).

Version 2 of the generator keeps this latent model exactly and changes only the rendering: where
the evidence sits in the frame (variable liver fraction, localized septa and capsule nodularity),
what hides it (rib shadows, reverberation, vessels, kidney and gallbladder, unreliable SWE regions)
and how each site's scanner shows it (:mod:`~mmfusion.liver.phantom.styles`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mmfusion.liver.phantom.styles import STYLES, ScannerStyle

__all__ = ["PhantomConfig"]


@dataclass(frozen=True)
class PhantomConfig:
    """Configuration of :class:`~mmfusion.liver.phantom.LiverPhantom`.

    Attributes:
        width: Frame width in pixels (scanner frames are about 800 x 600).
        height: Frame height in pixels.
        stage_prevalence: Relative number of patients per stage F0..F4.
        pairs_per_patient: Mean number of views (image pairs) per patient.
        views_range: Minimum and maximum views per patient.
        stiffness_median_kpa: Median of the log-normal stiffness per stage.
        stiffness_log_sigma: Sigma of ``log(stiffness)`` per stage.
        texture_mean: Mean of the texture latent per stage.
        texture_sd: Standard deviation of the texture latent within a stage.
        view_stiffness_log_sd: Per-view variation of ``log(stiffness)`` around the patient's latent.
        view_texture_sd: Per-view variation of the texture score around the patient's latent.
        swe_spatial_log_sd: Spatial variation of ``log(stiffness)`` inside the SWE box.
        swe_void_fraction: Range of the fraction of void (uncoloured) pixels in the SWE box.
        border_touch_prob: Probability that the fan runs past the bottom border of the frame.
        site_styles: One scanner style per site (names of
            :data:`~mmfusion.liver.phantom.styles.STYLES` or :class:`ScannerStyle` objects); sites
            are named ``"A"``, ``"B"``, ... in this order, and every stage's patients are spread
            evenly over them. The colour scale, fan opening, gain and file format come from the
            style.
        rib_shadow_prob: Probability that a view has one or two rib shadows.
        reverberation_prob: Probability of near-field reverberation bands.
        organ_prob: Probabilities of a kidney and of a gallbladder in a view.
        box_near_capsule_prob: Probability that the SWE box is placed too close to the capsule
            (its top rows then show reverberation-biased, unreliable stiffness).
        labs: Draw lab values per patient (age, AST, ALT, platelets; :mod:`mmfusion.liver.labs`)
            and write them as manifest columns on every view row (default False: the manifest is
            unchanged). Drawn from their own random stream, so images are unchanged either way.
        labs_missing_share: Share of PATIENTS without labs (empty cells), in [0, 1); only used
            with ``labs=True``. Default 0.15: an assumption (blood tests within a few months of
            the exam are missing for a minority of patients in retrospective elastography
            cohorts), not a published figure.
        decoy_share: Share ``rho`` of VIEWS with a decoy (issue 28's interaction knob; 0: none,
            the phantom of version 2 exactly). A decoy is a stage-independent hypoechoic region that
            only B-mode shows; where it crosses the SWE box the colour shows the decoy's stiffness
            instead of the liver's (:mod:`~mmfusion.liver.phantom.interaction`). Drawn from a
            random stream of its own, so every other draw is unchanged.
        decoy_cover: Range of the share of the SWE box the decoy covers (uniform). Default
            (0.3, 0.7): issue 28 says 30-60 %; the range is made symmetric around 0.5 so that the
            liver's share ``1 - u`` has the same distribution as the decoy's ``u`` and the share
            cannot tell liver from decoy (with (0.3, 0.6) a region covering over 60 % is liver).
        decoy_median_kpa: Median of the decoy's log-normal stiffness. Default 8 kPa (issue 28):
            between the F2 and F3 medians, so that a decoy reads as plausible liver.
        decoy_log_sigma: Sigma of the PATIENT's ``log(decoy stiffness)`` (one value per patient;
            each decoy view varies around it by ``view_stiffness_log_sd``, as the liver does).
            Default 0.3 (our choice): the central 95 % spans about 4.4-14 kPa, the range of the
            F0-F4 medians, so the value alone rarely gives the decoy away.
        void_black: Draw void (uncoloured) pixels of the SWE box black instead of B-mode grey
            (about 14 % of a box's pixels are void). Default False: the version-2 phantom. Not
            implied by ``decoy_share`` (the B-mode grey of the SWE frame never shows the decoy);
            set it alike in every arm of a comparison.
    """

    width: int = 800
    height: int = 600
    stage_prevalence: tuple[float, ...] = (162, 287, 284, 197, 94)
    pairs_per_patient: float = 1414 / 250
    views_range: tuple[int, int] = (4, 7)
    stiffness_median_kpa: tuple[float, ...] = (5.2, 6.2, 7.8, 9.8, 15.0)
    stiffness_log_sigma: tuple[float, ...] = (0.187, 0.203, 0.222, 0.244, 0.35)
    texture_mean: tuple[float, ...] = (0.0, 0.1, 0.2, 0.55, 0.85)
    texture_sd: float = 0.1
    view_stiffness_log_sd: float = 0.04
    view_texture_sd: float = 0.03
    swe_spatial_log_sd: float = 0.08
    swe_void_fraction: tuple[float, float] = (0.005, 0.03)
    border_touch_prob: float = 0.3
    site_styles: tuple[str | ScannerStyle, ...] = ("classic", "wide", "dual")
    rib_shadow_prob: float = 0.4
    reverberation_prob: float = 0.6
    organ_prob: tuple[float, float] = (0.3, 0.2)
    box_near_capsule_prob: float = 0.25
    labs: bool = False
    labs_missing_share: float = 0.15
    decoy_share: float = 0.0
    decoy_cover: tuple[float, float] = (0.3, 0.7)
    decoy_median_kpa: float = 8.0
    decoy_log_sigma: float = 0.3
    void_black: bool = False

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 48:
            raise ValueError(
                f"width, height: expected at least 64 x 48 pixels, got {self.width} x {self.height}"
            )
        for name in (
            "stage_prevalence",
            "stiffness_median_kpa",
            "stiffness_log_sigma",
            "texture_mean",
        ):
            value = getattr(self, name)
            if len(value) != 5:
                raise ValueError(f"{name}: expected 5 values (F0..F4), got {len(value)}")
        for name in ("stage_prevalence", "stiffness_median_kpa", "stiffness_log_sigma"):
            if min(getattr(self, name)) <= 0:
                raise ValueError(f"{name}: expected positive values, got {getattr(self, name)}")
        lo, hi = self.views_range
        if not 1 <= lo <= hi or not lo <= self.pairs_per_patient <= hi:
            raise ValueError(
                f"views_range, pairs_per_patient: expected 1 <= min <= mean <= max, got "
                f"{self.views_range} and {self.pairs_per_patient}"
            )
        if not 1 <= len(self.site_styles) <= 26:
            raise ValueError(f"site_styles: expected 1 to 26 styles, got {len(self.site_styles)}")
        for style in self.site_styles:
            if not isinstance(style, ScannerStyle) and style not in STYLES:
                raise ValueError(
                    f"site_styles: expected names in {sorted(STYLES)} or ScannerStyle objects, "
                    f"got {style!r}"
                )
        for name in ("border_touch_prob", "rib_shadow_prob", "reverberation_prob",
                     "box_near_capsule_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)}")
        if len(self.organ_prob) != 2 or not all(0.0 <= p <= 1.0 for p in self.organ_prob):
            raise ValueError(f"organ_prob: expected two probabilities, got {self.organ_prob}")
        if not isinstance(self.labs, bool):
            raise ValueError(f"labs: expected True or False, got {self.labs!r}")
        if not 0.0 <= self.labs_missing_share < 1.0:
            raise ValueError(
                f"labs_missing_share: expected a share in [0, 1), got {self.labs_missing_share}"
            )
        self._check_decoy()

    def _check_decoy(self) -> None:
        if not 0.0 <= self.decoy_share <= 1.0:
            raise ValueError(f"decoy_share: expected a share in [0, 1], got {self.decoy_share}")
        if len(self.decoy_cover) != 2 or not 0.0 < self.decoy_cover[0] < self.decoy_cover[1] < 1.0:
            raise ValueError(
                f"decoy_cover: expected (low, high) with 0 < low < high < 1, got {self.decoy_cover}"
            )
        if not self.decoy_median_kpa > 0 or not self.decoy_log_sigma > 0:
            raise ValueError(
                "decoy_median_kpa, decoy_log_sigma: expected positive values, got "
                f"{self.decoy_median_kpa} and {self.decoy_log_sigma}"
            )
        if not isinstance(self.void_black, bool):
            raise ValueError(f"void_black: expected True or False, got {self.void_black!r}")

    @property
    def sites(self) -> tuple[str, ...]:
        """Site names, ``"A"``, ``"B"``, ... one per entry of ``site_styles``."""
        return tuple(chr(ord("A") + i) for i in range(len(self.site_styles)))

    def style(self, site: str) -> ScannerStyle:
        """The :class:`ScannerStyle` of ``site``.

        Raises:
            ValueError: Unknown site.
        """
        if site not in self.sites:
            raise ValueError(f"site: expected one of {self.sites}, got {site!r}")
        style = self.site_styles[self.sites.index(site)]
        return style if isinstance(style, ScannerStyle) else STYLES[style]

    @property
    def scale(self) -> float:
        """Pixel scale relative to an 800 x 600 frame (speckle, text and structures scale)."""
        return min(self.width / 800.0, self.height / 600.0)

    def as_dict(self) -> dict[str, object]:
        """Plain-JSON form (tuples become lists)."""
        def plain(value: object) -> object:
            if isinstance(value, ScannerStyle):
                return {k: plain(v) for k, v in asdict(value).items()}
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}
