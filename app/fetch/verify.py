"""Checking a downloaded checkpoint: it must load strictly into the model it is meant for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.errors import ConfigError, first_line

# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def _chandelier_target(key: str, groups: int) -> list[str]:
    """The Elic2022Chandelier key(s) for one key of the re-implementation's ``TestModel``."""
    head, _, rest = key.partition(".")
    if head in ("g_a", "g_s"):
        return [key]
    if head in ("h_a", "h_s", "entropy_bottleneck"):
        return [f"latent_codec.hyper.{key}"]
    index, _, tail = rest.partition(".")
    if head == "cc_transforms" and index.isdigit():
        # cc_transforms[i] predicts group i + 1 from group 0 and group i (ChannelGroups' y{i+1})
        return [f"latent_codec.y.channel_context.y{int(index) + 1}.{tail}"]
    if head == "context_prediction" and index.isdigit():
        return [f"latent_codec.y.latent_codec.y{index}.context_prediction.{tail}"]
    if head == "ParamAggregation" and index.isdigit():
        return [f"latent_codec.y.latent_codec.y{index}.entropy_parameters.{tail}"]
    if head == "gaussian_conditional":
        # one shared GaussianConditional there; compressai has one per channel group
        return [f"latent_codec.y.latent_codec.y{k}.y.{key}" for k in range(groups)]
    return [key]


def chandelier_to_compressai(state_dict: dict[str, Any], groups: int = 5) -> dict[str, Any]:
    """Rename a VincentChandelier/ELiC-ReImplemetation state_dict to Elic2022Chandelier's keys.

    Only names change: both concatenate the context-model inputs in the same order (spatial
    context, channel context means/scales, hyper means/scales; channel context from the first and
    the latest group), and their checkerboard masks are equal. ``module.`` prefixes (DataParallel)
    and compressai ≤ 1.2.6 entropy-bottleneck names (``_matrix0``) are mapped as well.
    """
    from app.models.factory import canonical_state_dict

    out: dict[str, Any] = {}
    for key, value in canonical_state_dict(state_dict).items():
        for target in _chandelier_target(key, groups):
            out[target] = value
    return out


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means a bad file
        raise ConfigError(f"cannot read checkpoint {path.name}: {first_line(exc)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"{path.name} holds no state_dict")
    return obj


def _verify_elic2022chandelier(path: Path, spec: dict[str, Any], name: str) -> None:
    from compressai.models import Elic2022Chandelier

    kwargs: dict[str, Any] = {"N": int(spec.get("N", 192)), "M": int(spec.get("M", 320))}
    if spec.get("groups"):
        kwargs["groups"] = [int(g) for g in spec["groups"]]
    model = Elic2022Chandelier(**kwargs)
    state = chandelier_to_compressai(_read_state_dict(path), len(model.groups))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        shape = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise ConfigError(f"{name} does not match Elic2022Chandelier({shape}): {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)  # resizes the coder tables, then loads
    except RuntimeError as exc:
        raise ConfigError(f"{name} does not load into Elic2022Chandelier: {first_line(exc)}") from None


def verify_checkpoint(path: Path, spec: dict[str, Any], name: str) -> str:
    """Load ``path`` strictly into the model ``spec`` names; ConfigError (one line) if it fails.

    Returns what it was verified against, for the manifest.
    """
    kind = spec.get("kind")
    if kind == "official-config":
        from app.models.factory import load_official_checkpoint

        config = str(spec.get("config", "taco-official"))
        try:
            load_official_checkpoint(path, config)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(path.name, name)) from None
        return f"app config {config}"
    if kind == "elic2022chandelier":
        _verify_elic2022chandelier(path, spec, name)
        return f"compressai Elic2022Chandelier(N={spec.get('N', 192)}, M={spec.get('M', 320)})"
    raise ConfigError(f"unknown verify kind {kind!r}")
