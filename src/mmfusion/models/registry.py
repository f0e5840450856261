"""The model registry, in timm's manner: named presets of :class:`ModelConfig` + :class:`TrainingConfig`.

:func:`register_model` names a :class:`Preset`; :func:`~mmfusion.models.create_model` builds it by
name and :func:`list_models` lists the names. A domain package registers its presets when it is
imported, and names itself in the ``mmfusion.plugins`` entry-point group
(:data:`mmfusion.nn.registry.PLUGIN_GROUP`) so that its names are found without the user
importing it: the first lookup of an unknown name, and every :func:`list_models`, load the
plug-ins first (:func:`mmfusion.nn.registry.load_plugins`). The presets of the paper's network
and its Table I variants come that way from the domain package of the paper.

This module imports no torch: a domain registers its presets without loading the network code.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field

from mmfusion._values import short_repr
from mmfusion.models.config import ModelConfig, TrainingConfig
from mmfusion.nn.registry import load_plugins

__all__ = ["Preset", "get_preset", "list_models", "register_model"]


@dataclass(frozen=True)
class Preset:
    """A registered name: an architecture, its training recipe and one line saying what it is."""

    model: ModelConfig
    training: TrainingConfig = field(default_factory=TrainingConfig)
    description: str = ""

    def __post_init__(self) -> None:
        """Check the field types.

        Raises:
            TypeError: ``model`` is not a :class:`ModelConfig`, ``training`` not a
                :class:`TrainingConfig` or ``description`` not a str.
        """
        for name, value, kind in (("model", self.model, ModelConfig),
                                  ("training", self.training, TrainingConfig),
                                  ("description", self.description, str)):
            if not isinstance(value, kind):
                raise TypeError(f"{name}: expected a {kind.__name__}, got {type(value).__name__}")


_REGISTRY: dict[str, Preset] = {}


def register_model(name: str, preset: Preset) -> None:
    """Register ``preset`` as ``name``.

    Raises:
        ValueError: The name is empty or taken.
        TypeError: ``preset`` is not a :class:`Preset`.
    """
    if not (isinstance(name, str) and name):
        raise ValueError(f"name: expected a non-empty str, got {short_repr(name)}")
    if not isinstance(preset, Preset):
        raise TypeError(f"preset: expected a Preset, got {type(preset).__name__}")
    if name in _REGISTRY:
        raise ValueError(f"name: {[name]} already registered")
    _REGISTRY[name] = preset


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern``, sorted (plug-ins loaded first)."""
    load_plugins()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_preset(name: str) -> Preset:
    """The :class:`Preset` registered as ``name`` (plug-ins are loaded if it is not known yet).

    Raises:
        ValueError: Unknown name (the message lists the registered ones and close matches).
    """
    if name not in _REGISTRY:
        load_plugins()
    if name not in _REGISTRY:
        names = list_models()
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"name: unknown model {name!r}; registered: {', '.join(names)}{hint}")
    return _REGISTRY[name]
