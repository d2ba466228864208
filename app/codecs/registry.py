"""Which codecs exist, where their weights are, and the cached loader (`load_codec`).

The registry is data: :data:`LEARNED` maps a codec name to a model config (``app/configs``) and a
kind — ``embedded`` (weights shipped in ``checkpoints/``, checked against its manifest),
``official`` (the authors' fixed-rate ``lambda_*.pth.tar`` files a user drops into
``checkpoints/official/``) or ``tiny`` (random weights, for tests) — and :data:`CLASSICAL` names
the Pillow codecs.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import bitstream
from app.codecs.classical import CLASSICAL_CODECS
from app.codecs.learned import CODINGS, LearnedCodec
from app.codecs.protocol import Codec, as_float32
from app.codecs.weights import Variant, random_fingerprint
from app.errors import BitstreamError, ConfigError, MissingModelError, TacoError
from app.hashing import sha256_cached
from app.settings import Settings, get_settings

#: The six released TACO rate points: the λ's of the official ``lambda_*.pth.tar`` checkpoints.
OFFICIAL_LAMBDAS = (0.0004, 0.0008, 0.0016, 0.004, 0.009, 0.015)
_OFFICIAL_RE = re.compile(r"lambda_([0-9.eE+-]+)\.pth(?:\.tar)?$")


def load_manifest(settings: Settings | None = None) -> dict[str, Any]:
    """``checkpoints/manifest.json`` ({} when absent)."""
    path = (settings or get_settings()).manifest
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


@dataclass(frozen=True)
class ModelSpec:
    """How a codec name maps to a config and weights."""

    config: str
    description: str
    kind: str  # "embedded" | "official" | "tiny"


LEARNED: dict[str, ModelSpec] = {
    "taco": ModelSpec("taco-small", "TACO (embedded, MiniLM text, CPU-trained)", "embedded"),
    "elic": ModelSpec("elic-small", "ELIC (embedded, CPU-trained)", "embedded"),
    "taco-official": ModelSpec("taco-official", "TACO (official ICML 2024 checkpoints)", "official"),
    "elic-official": ModelSpec("elic-official", "ELIC (JiangWeibeta layout, your checkpoints)", "official"),
    "taco-tiny": ModelSpec("taco-tiny", "tiny random TACO (tests only)", "tiny"),
    "elic-tiny": ModelSpec("elic-tiny", "tiny random ELIC (tests only)", "tiny"),
}
CLASSICAL = CLASSICAL_CODECS


def _allow_random(flag: bool) -> bool:
    return flag or get_settings().allow_random


def official_checkpoints(name: str) -> dict[float, Path]:
    """λ → file for the official fixed-rate checkpoints a user dropped into checkpoints/official/."""
    official = get_settings().official_dir
    folder = official if name == "taco-official" else official / "elic"
    found: dict[float, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            m = _OFFICIAL_RE.search(p.name)
            if m and p.is_file():
                try:
                    found[as_float32(float(m.group(1)))] = p
                except ValueError:
                    continue
    return found


def _embedded_weights(config_name: str) -> tuple[Path, str | None]:
    entry = load_manifest().get(config_name, {})
    path = get_settings().checkpoint_dir / entry.get("file", f"{config_name}.safetensors")
    return path, entry.get("sha256")


def _make_learned(name: str, checkpoint: str | os.PathLike | None, allow_random: bool,
                  coding: str = bitstream.PORTABLE, device: str = "cpu") -> LearnedCodec:
    from app.models.factory import load_config

    spec = LEARNED[name]
    cfg = load_config(spec.config)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise MissingModelError(f"checkpoint not found: {path}")
        fixed = None
        m = _OFFICIAL_RE.search(path.name)
        if spec.kind == "official":
            if not m:
                raise ConfigError(f"cannot tell the rate of {path.name}: expected lambda_<λ>.pth.tar")
            fixed = as_float32(float(m.group(1)))
        return LearnedCodec(name, [Variant(cfg, path, fixed)], spec.description, coding, device)
    if spec.kind == "official":
        files = official_checkpoints(name)
        if not files:
            official, root = get_settings().official_dir, get_settings().root
            where = official if name == "taco-official" else official / "elic"
            raise MissingModelError(
                f"no official checkpoints in {where.relative_to(root) if where.is_relative_to(root) else where}: "
                "download lambda_*.pth.tar from the TACO authors and put them there"
            )
        variants = [Variant(cfg, p, lam) for lam, p in sorted(files.items())]
        return LearnedCodec(name, variants, spec.description, coding, device)
    if spec.kind == "embedded":
        path, sha = _embedded_weights(spec.config)
        if path.is_file():
            actual = sha256_cached(path)
            if sha is not None and actual != sha:
                raise MissingModelError(
                    f"{path.name} does not match checkpoints/manifest.json (sha256 {actual[:12]}…); "
                    "re-download or retrain it"
                )
            return LearnedCodec(name, [Variant(cfg, path, None, actual)], spec.description,
                                coding, device)
        if not _allow_random(allow_random):
            raise MissingModelError(
                f"weights for {name!r} ({path.name}) are not in checkpoints/: train them with "
                "`python -m app train` or set TACO_ALLOW_RANDOM=1 for random weights (development only)"
            )
    elif not _allow_random(allow_random):
        raise MissingModelError(f"{name!r} has random weights only: pass allow_random=True")
    variant = Variant(cfg, None, None, random_fingerprint(spec.config))
    return LearnedCodec(name, [variant], spec.description + " [RANDOM WEIGHTS]", coding,
                        device)


_CACHE: dict[tuple, Codec] = {}
_CACHE_LOCK = threading.Lock()


def _check_device(device: str) -> str:
    """A normalised device string, or a one-line :class:`ConfigError`."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r} (cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise ConfigError(f"device must be cpu or cuda, not {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available in this process")
    return str(dev)


def load_codec(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    allow_random: bool = False,
    coding: str = bitstream.PORTABLE,
    device: str = "cpu",
) -> Codec:
    """The codec called ``name`` (cached): "taco", "elic", "taco-official", "jpeg", ...

    Embedded models without their shipped weights raise :class:`MissingModelError` unless random
    weights are asked for explicitly (``allow_random=True`` or ``TACO_ALLOW_RANDOM=1``). Learned
    codecs encode with the portable coding path unless ``coding="float"`` (the official float32
    arithmetic, whose files decode only on CPUs with the encoder's float kernels).
    ``device`` ("cpu", "cuda", "cuda:N") is where a learned model runs; classical codecs ignore it.
    """
    name = name.strip().lower()
    if coding not in CODINGS:
        raise ConfigError(f"coding must be one of {', '.join(CODINGS)}, got {coding!r}")
    device = _check_device(device)
    key = (name, str(checkpoint) if checkpoint else None, _allow_random(allow_random), coding,
           device)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    if name in CLASSICAL:
        from app.classical import get_classical_codec

        codec: Codec = get_classical_codec(name)
    elif name in LEARNED:
        codec = _make_learned(name, checkpoint, allow_random, coding, device)
    else:
        raise ConfigError(
            f"unknown codec {name!r}; choose from {', '.join([*LEARNED, *CLASSICAL])}"
        )
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, codec)


def loaded_codecs() -> list[Codec]:
    with _CACHE_LOCK:
        return list(_CACHE.values())


def decoder_key(header: bitstream.Header) -> tuple[str, str | None, bool]:
    """``load_codec`` arguments (name, checkpoint, allow_random) of the weights that made a file.

    A loaded codec whose weights fingerprint matches the header wins (so files made with a
    user's checkpoint or with random development weights decode with those); otherwise the
    default weights of the named model. Used to decode in another process (`app.sandbox`).
    """
    if header.model_id not in LEARNED:
        raise BitstreamError(f"bitstream names an unknown model {header.model_id!r}")
    with _CACHE_LOCK:
        items = list(_CACHE.items())
    for (name, checkpoint, allow_random, _coding, _device), codec in items:
        if not isinstance(codec, LearnedCodec) or codec.name != header.model_id:
            continue
        try:
            if codec._variant(header.lmbda).fingerprint == header.fingerprint:
                return name, checkpoint, allow_random
        except TacoError:
            continue
    return header.model_id, None, _allow_random(False)


def available_model_sets() -> dict[str, dict[str, str]]:
    """Model sets the UI can offer: label → {"taco": codec name, "elic": codec name}."""
    sets: dict[str, dict[str, str]] = {}
    emb = [n for n in ("taco", "elic") if _embedded_weights(LEARNED[n].config)[0].is_file()]
    if len(emb) == 2 or _allow_random(False):
        sets["Embedded (offline)"] = {"taco": "taco", "elic": "elic"}
    if official_checkpoints("taco-official"):
        elic = "elic-official" if official_checkpoints("elic-official") else "elic"
        # no paper-size ELIC was ever released: without one, the set says that its ELIC is the
        # small embedded model (a comparison between models of different sizes)
        label = "Official TACO" if elic == "elic-official" else "Official TACO (vs the small embedded ELIC)"
        sets[label] = {"taco": "taco-official", "elic": elic}
    return sets


CodecFactory = Callable[[str], Codec]
