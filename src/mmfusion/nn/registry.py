"""Open registries of fusion methods and encoders, in timm's manner, and what an encoder gives.

A fusion method or an encoder defined in your own file becomes usable by name - in
:class:`~mmfusion.models.ModelConfig`, :func:`~mmfusion.models.create_model`, ``config.json`` and
:func:`~mmfusion.models.from_pretrained` - once it is registered::

    @register_fusion("gated")
    class GatedFusion(nn.Module):
        def __init__(self, features: Mapping[str, FeatureSpec], embed_dim: int = 256): ...

    @register_encoder("mlp")
    class MyEncoder(nn.Module):
        def __init__(self, columns: Sequence[str]): ...
        def feature_spec(self, image_size) -> FeatureSpec: ...

**The fusion interface.** ``create_fusion(name, features, **kwargs)`` calls the registered
factory as ``factory(features, **kwargs)``, ``features`` mapping each modality, in fusion order,
to the :class:`FeatureSpec` of its encoder's output; :func:`~mmfusion.models.build_model` passes
``embed_dim=config.embed_dim`` and ``config.fusion_kwargs``. The module has ``modalities`` (the
keys of ``features``, in order) and ``out_features`` (the size ``D`` of the fused vector); it is
called as ``fusion(features, available, return_attention)`` with ``features`` modality -> tensor
(any non-empty subset when missing modalities are allowed), ``available`` ``None`` or modality ->
bool ``[B]``, and returns a :class:`~mmfusion.nn.FusionOutput` (``fused`` ``[B, D]``,
``features`` modality -> ``[B, d]`` for the consistency loss, ``attention`` or ``None``).

**The encoder interface.** ``create_encoder(name, **kwargs)`` calls ``factory(**kwargs)`` (plus
``weights=`` from :func:`~mmfusion.models.build_model` when the factory takes that argument). The
module maps a modality's input ``[B, ...]`` to a map ``[B, C, H, W]`` or a vector ``[B, D]`` and
has ``feature_spec(image_size) -> FeatureSpec``; optionally ``check_input(x, name)`` (the check
:class:`~mmfusion.nn.MultiModalClassifier` runs on that modality's input; without it, any
floating-point tensor is accepted) and ``input_shape(image_size) -> tuple`` (one sample's input
shape, for :func:`mmfusion.export.to_onnx`; without it, ``(in_chans, H, W)``).

Built in: the fusions ``"attention"`` (:class:`~mmfusion.nn.AttentionFusion`) and ``"late"``
(:class:`~mmfusion.nn.ConcatFusion`), the encoders ``"timm"``
(:class:`~mmfusion.nn.ModalityEncoder`) and ``"tabular"`` (:class:`~mmfusion.nn.TabularEncoder`).
They are known by name without importing torch (so a configuration can be checked cheaply) and
registered when their module is first imported.

**Plug-ins.** A package that registers fusions, encoders or models on import names itself in the
entry-point group :data:`PLUGIN_GROUP` (``mmfusion.plugins``) of its ``pyproject.toml``::

    [project.entry-points."mmfusion.plugins"]
    mydomain = "mydomain.models"

:func:`load_plugins` imports every such module once per process; the registries call it on the
first lookup of a name they do not know (and when listing their names), so a saved model whose
pieces come from an installed plug-in loads without the user importing the plug-in by hand.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar

from mmfusion._values import is_int, short_repr

__all__ = [
    "PLUGIN_GROUP",
    "FeatureSpec",
    "check_encoder_name",
    "check_fusion_name",
    "create_encoder",
    "create_fusion",
    "get_encoder",
    "get_fusion",
    "list_encoders",
    "list_fusions",
    "load_plugins",
    "register_encoder",
    "register_fusion",
]

PLUGIN_GROUP = "mmfusion.plugins"
"""Entry-point group of the packages that register fusions, encoders or models on import."""

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class FeatureSpec:
    """What an encoder gives for one modality: a feature map or a feature vector.

    Attributes:
        kind: ``"map"`` (``[B, C, H, W]``) or ``"vector"`` (``[B, D]``).
        channels: ``C`` of a map, ``D`` of a vector.
        spatial: ``(H, W)`` of a map when known (for a given input size), ``None`` for a vector
            (and for a map whose size is not known).

    Example:
        >>> FeatureSpec("map", 2048, (7, 7)).ndim, FeatureSpec("vector", 64).ndim
        (4, 2)
    """

    kind: Literal["map", "vector"]
    channels: int
    spatial: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            ValueError: An unknown ``kind``, a ``channels`` that is not a positive int, or a
                ``spatial`` that is not two positive ints (or is given for a vector).
        """
        if self.kind not in ("map", "vector"):
            raise ValueError(f"kind: expected 'map' or 'vector', got {short_repr(self.kind)}")
        if not (is_int(self.channels) and self.channels >= 1):
            raise ValueError(f"channels: expected a positive int, got {short_repr(self.channels)}")
        object.__setattr__(self, "channels", int(self.channels))
        if self.spatial is None:
            return
        if self.kind == "vector":
            raise ValueError(f"spatial: a vector has no spatial size, got {short_repr(self.spatial)}")
        size = tuple(self.spatial) if isinstance(self.spatial, list | tuple) else ()
        if len(size) != 2 or not all(is_int(s) and s >= 1 for s in size):
            raise ValueError(
                f"spatial: expected None or (H, W), two positive ints, got {short_repr(self.spatial)}"
            )
        object.__setattr__(self, "spatial", (int(size[0]), int(size[1])))

    @property
    def ndim(self) -> int:
        """The feature tensor's number of dimensions (batch included), 4 for a map, 2 for a vector."""
        return 4 if self.kind == "map" else 2


# ---------------------------------------------------------------------------------------------
# Plug-ins
# ---------------------------------------------------------------------------------------------

_PLUGINS: dict[str, bool] = {"loaded": False}


def load_plugins() -> tuple[str, ...]:
    """Import the modules of the :data:`PLUGIN_GROUP` entry points (once per process).

    A plug-in that fails to import is reported with a :class:`RuntimeWarning` naming it and the
    error, and skipped; the others still load.

    Returns:
        The names of the entry points loaded by this call (empty after the first call).
    """
    if _PLUGINS["loaded"]:
        return ()
    _PLUGINS["loaded"] = True  # before loading: a plug-in may look names up while it imports
    loaded = []
    seen: set[str] = set()
    for point in entry_points(group=PLUGIN_GROUP):
        if point.value in seen:  # the same package installed twice (editable and wheel)
            continue
        seen.add(point.value)
        try:
            point.load()
        except Exception as err:  # a broken plug-in must not break the others
            warnings.warn(
                f"mmfusion plug-in {point.name!r} ({point.value}) failed to import and was "
                f"skipped: {type(err).__name__}: {err}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        loaded.append(point.name)
    return tuple(loaded)


# ---------------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------------


def _listed(names: list[str]) -> str:
    if not names:
        return "a registered name (none is registered)"
    if len(names) == 1:
        return repr(names[0])
    return ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}"


def _qualname(obj: object) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class _Registry:
    """Names -> factories of one kind (fusion or encoder), with built-ins known by name only."""

    def __init__(self, kind: str, register_name: str, builtins: Mapping[str, str]) -> None:
        self.kind = kind
        self.register_name = register_name
        self.builtins = dict(builtins)  # name -> the module whose import registers it
        self.entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[_F], _F]:
        if not (isinstance(name, str) and name.strip() == name and name):
            raise ValueError(
                f"name: expected a non-empty {self.kind} name without surrounding spaces, "
                f"got {short_repr(name)}"
            )

        def decorator(factory: _F) -> _F:
            if not callable(factory):
                raise TypeError(
                    f"{self.register_name}({name!r}): expected a class or function, "
                    f"got {type(factory).__name__}"
                )
            home = self.builtins.get(name)
            if home is not None and getattr(factory, "__module__", None) != home:
                raise ValueError(
                    f"{self.register_name}: {name!r} is the name of mmfusion's built-in "
                    f"{self.kind} (defined in {home}); pick another name"
                )
            if name in self.entries:
                raise ValueError(
                    f"{self.register_name}: the {self.kind} name {name!r} is already registered "
                    f"(by {_qualname(self.entries[name])}); pick another name"
                )
            self.entries[name] = factory
            return factory

        return decorator

    def known(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.entries or name in self.builtins)

    def names(self) -> list[str]:
        load_plugins()
        return sorted({*self.builtins, *self.entries})

    def check(self, name: object, arg: str) -> str:
        if self.known(name):
            return str(name)
        load_plugins()
        if self.known(name):
            return str(name)
        names = self.names()
        message = f"{arg}: expected {_listed(names)}, got {short_repr(name)}"
        if isinstance(name, str):
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            if close:
                message += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
            message += (
                f". No {self.kind} is registered as {name!r}: if it is your own, import the module "
                f"that registers it (@mmfusion.nn.{self.register_name}({name!r})) first"
            )
        raise ValueError(message)

    def get(self, name: object, arg: str) -> Callable[..., Any]:
        key = self.check(name, arg)
        if key not in self.entries:
            importlib.import_module(self.builtins[key])  # registers the built-in on import
        return self.entries[key]


_FUSIONS = _Registry(
    "fusion",
    "register_fusion",
    {
        "attention": "mmfusion.nn.fusion",
        "late": "mmfusion.nn.fusion",
        # the catalogue (issue 27), one method per module of mmfusion.nn.fusions
        "cross_spatial_attention": "mmfusion.nn.fusions.cross_spatial_attention",
        "gated": "mmfusion.nn.fusions.gated",
        "low_rank_tensor": "mmfusion.nn.fusions.low_rank_tensor",
        "film": "mmfusion.nn.fusions.film",
        "cross_attention": "mmfusion.nn.fusions.cross_attention",
        "bottleneck": "mmfusion.nn.fusions.bottleneck",
        "perceiver": "mmfusion.nn.fusions.perceiver",
        "evidential": "mmfusion.nn.fusions.evidential",
    },
)
_ENCODERS = _Registry(
    "encoder", "register_encoder", {"timm": "mmfusion.nn.encoder", "tabular": "mmfusion.nn.tabular"}
)


def register_fusion(name: str) -> Callable[[_F], _F]:
    """Decorator: register a fusion class (or factory function) under ``name``.

    The factory is called as ``factory(features, **kwargs)``; see the module docstring for the
    interface.

    Raises:
        ValueError: ``name`` is empty or already registered (or is a built-in's name).
    """
    return _FUSIONS.register(name)


def register_encoder(name: str) -> Callable[[_F], _F]:
    """Decorator: register an encoder class (or factory function) under ``name``.

    The factory is called as ``factory(**kwargs)``; see the module docstring for the interface.

    Raises:
        ValueError: ``name`` is empty or already registered (or is a built-in's name).
    """
    return _ENCODERS.register(name)


def list_fusions() -> list[str]:
    """Registered fusion names, sorted (plug-ins loaded first).

    Example:
        >>> {"attention", "late"} <= set(list_fusions())
        True
    """
    return _FUSIONS.names()


def list_encoders() -> list[str]:
    """Registered encoder names, sorted (plug-ins loaded first).

    Example:
        >>> {"tabular", "timm"} <= set(list_encoders())
        True
    """
    return _ENCODERS.names()


def check_fusion_name(name: object, arg: str = "fusion") -> str:
    """``name`` if a fusion is registered under it (built-ins are known without importing torch).

    Raises:
        ValueError: Not a registered name (plug-ins are loaded first); the message names ``arg``,
            lists the registered names and close matches, and says to import the module that
            registers it.
    """
    return _FUSIONS.check(name, arg)


def check_encoder_name(name: object, arg: str = "encoder") -> str:
    """``name`` if an encoder is registered under it; see :func:`check_fusion_name`."""
    return _ENCODERS.check(name, arg)


def get_fusion(name: str) -> Callable[..., Any]:
    """The factory (usually the class) registered as fusion ``name``.

    Raises:
        ValueError: Not a registered name (see :func:`check_fusion_name`).
    """
    return _FUSIONS.get(name, "name")


def get_encoder(name: str) -> Callable[..., Any]:
    """The factory (usually the class) registered as encoder ``name``.

    Raises:
        ValueError: Not a registered name (see :func:`check_fusion_name`).
    """
    return _ENCODERS.get(name, "name")


def _check_features(features: object) -> dict[str, FeatureSpec]:
    if not isinstance(features, Mapping) or not features:
        raise TypeError(
            f"features: expected a non-empty mapping modality -> FeatureSpec, got "
            f"{short_repr(features)}"
        )
    for key, spec in features.items():
        if not (isinstance(key, str) and key):
            raise ValueError(f"features: expected modality names (non-empty str), got {key!r}")
        if not isinstance(spec, FeatureSpec):
            raise TypeError(
                f"features[{key!r}]: expected a FeatureSpec, got {type(spec).__name__}"
            )
    return dict(features)


def create_fusion(name: str, features: Mapping[str, FeatureSpec], **kwargs: Any) -> Any:
    """Build the fusion registered as ``name`` over ``features`` (modality -> its encoder's
    :class:`FeatureSpec`, in fusion order).

    Args:
        name: A registered fusion (:func:`list_fusions`): ``"attention"``, ``"late"``, or yours.
        features: Modality -> what its encoder gives; the mapping's order is the fusion order.
        **kwargs: Passed to the fusion (``embed_dim=``, ...).

    Returns:
        The fusion module.

    Raises:
        ValueError: Unknown ``name`` (the registered ones are listed).
        TypeError: ``features`` is not a non-empty mapping of :class:`FeatureSpec`.

    Example:
        >>> features = {"us": FeatureSpec("map", 96, (2, 2)), "labs": FeatureSpec("vector", 16)}
        >>> fusion = create_fusion("late", features, embed_dim=8)
        >>> fusion.modalities, fusion.out_features
        (('us', 'labs'), 16)
    """
    factory = _FUSIONS.get(name, "name")
    return factory(_check_features(features), **kwargs)


def create_encoder(name: str, **kwargs: Any) -> Any:
    """Build the encoder registered as ``name`` with ``kwargs``.

    Raises:
        ValueError: Unknown ``name`` (the registered ones are listed).

    Example:
        >>> encoder = create_encoder("tabular", columns=("age", "ast", "alt"), out_features=8)
        >>> encoder.feature_spec()
        FeatureSpec(kind='vector', channels=8, spatial=None)
    """
    return _ENCODERS.get(name, "name")(**kwargs)
