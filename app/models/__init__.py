"""Learned codecs: ELIC (JiangWeibeta / TACO layout) and TACO, built from JSON configs.

Public API (see docs/ARCHITECTURE.md, "Model contract")::

    cfg = load_config("taco-small")            # or a path to a JSON file
    model = create_model(cfg)                  # random init; weights_source is None
    load_weights(model, "checkpoints/taco-small.safetensors")
    model = load_official_checkpoint("lambda_0.0008.pth.tar")   # official TACO weights
"""

from app.models.config import list_configs, load_config, validate_config
from app.models.elic import ELIC, coding_threads
from app.models.factory import (
    canonical_state_dict,
    create_model,
    load_official_checkpoint,
    load_weights,
    read_weights_metadata,
    save_weights,
)
from app.models.taco import TACO

__all__ = [
    "ELIC",
    "TACO",
    "canonical_state_dict",
    "coding_threads",
    "create_model",
    "list_configs",
    "load_config",
    "load_official_checkpoint",
    "load_weights",
    "read_weights_metadata",
    "save_weights",
    "validate_config",
]
