"""Model sets: which TACO / ELIC pair the UI offers (embedded, official, tiny)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from app.errors import TacoError
from app.settings import Settings, get_settings
from app.ui.backend import Backend, default_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSet:
    """A TACO model and the ELIC baseline it is compared with."""

    label: str
    taco: str
    elic: str | None
    allow_random: bool = False


TINY_SET = ModelSet("Tiny random models (tests)", "taco-tiny", "elic-tiny", allow_random=True)
EMBEDDED_FALLBACK = ModelSet("Embedded (offline)", "taco", "elic")


def resolve_model_sets(
    backend: Backend | None = None, settings: Settings | None = None
) -> dict[str, ModelSet]:
    """The model sets the UI offers, in display order.

    ``TACO_MODEL_SET=tiny`` gives only the tiny random set (tests, CI). Otherwise the sets whose
    weights exist (`app.codecs.available_model_sets`); when none exist, the embedded set anyway, so
    that the first request explains which weights are missing.
    """
    choice = (settings or get_settings()).model_set
    if choice == "tiny":
        return {TINY_SET.label: TINY_SET}
    backend = backend or default_backend()
    try:
        found = backend.available_model_sets()
    except TacoError as exc:
        log.warning("no model sets: %s", exc)
        found = {}
    sets = {
        label: ModelSet(label, spec["taco"], spec.get("elic"))
        for label, spec in found.items()
        if spec.get("taco")
    }
    if not sets:
        sets = {EMBEDDED_FALLBACK.label: EMBEDDED_FALLBACK}
    if choice and choice != "tiny":
        picked = {k: v for k, v in sets.items() if choice in k.lower() or choice == v.taco}
        sets = picked or sets
    return sets


def missing_weights_notice(
    backend: Backend | None = None, settings: Settings | None = None
) -> str:
    """A banner for a fresh checkout without trained weights ("" when weights exist)."""
    if (settings or get_settings()).model_set == "tiny":
        return ""
    backend = backend or default_backend()
    try:
        found = backend.available_model_sets()
    except TacoError:
        found = {}
    if found:
        return ""
    return (
        "**No model weights installed yet.** The embedded TACO/ELIC weights "
        "(`checkpoints/taco-small.safetensors`, `checkpoints/elic-small.safetensors`) are "
        "missing: train them with `python -m app train`, put the official checkpoints in "
        "`checkpoints/official/`, or start with `TACO_MODEL_SET=tiny` (tiny random models) to "
        "try the interface. Requests will explain what is missing."
    )


def pick_model_set(
    model_set: ModelSet | str | None, sets: Mapping[str, ModelSet] | None = None
) -> ModelSet:
    """Accept a ModelSet, a label from the UI, a TACO codec name, or None (first available)."""
    if isinstance(model_set, ModelSet):
        return model_set
    sets = dict(sets) if sets is not None else resolve_model_sets()
    if not model_set:
        return next(iter(sets.values()))
    if model_set in sets:
        return sets[model_set]
    for ms in sets.values():
        if model_set in (ms.taco, ms.label.lower()):
            return ms
    raise TacoError(f"unknown model set {model_set!r}; choose from {', '.join(sets)}")
