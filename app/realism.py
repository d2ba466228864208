"""Realism of reconstructions: FID and KID against the originals, per codec and rate.

The distance code is torch-fidelity's (``fid_features_to_statistics`` /
``fid_statistics_to_metric`` and ``kid_features_to_metric``), on the 2048-d pool features of its
``FeatureExtractorInceptionV3`` (the TF-Inception port used for FID). Features come from
weights the user has locally — ``--inception-weights PATH`` or torch-fidelity's own file in the
torch hub cache — and never from a download: without weights the report says so in one line.

Features are stored as one ``.npy`` per row (and per original image) under ``--out/features/``
before the row reaches results.csv, so a killed or sharded run keeps them with its rows and the
merge on rank 0 reads every rank's features from the shared folder.

Two ways to feed Inception (``patch``): ``0`` (default) gives each whole image, which
torch-fidelity resizes to 299×299; ``P`` > 0 cuts each image into non-overlapping P×P crops
(from the top-left corner, the remainder dropped; images smaller than P give no crop) and each
crop is one sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.errors import ConfigError

if TYPE_CHECKING:
    from app.eval.schema import Row


def _home_relative(path: Path) -> str:
    """``path`` with the user's home written as ``~`` (reports get committed and shared)."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


#: torch-fidelity's Inception file name (what its loader would put in the torch hub cache).
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: torch-fidelity's KID defaults: 100 subsets of (at most) 1000 samples.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
FEATURE_DIR = "features"

#: HxWx3 uint8 images -> (N, D) float features.
Extractor = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass
class Realism:
    """Whether and how FID/KID are computed: an extractor, or the reason there is none."""

    extractor: Extractor | None
    #: what made the features (for the report and summary), or why there are none
    note: str
    patch: int = 0

    @property
    def enabled(self) -> bool:
        return self.extractor is not None

    @classmethod
    def off(cls, reason: str) -> Realism:
        return cls(None, reason)


def cached_weights() -> Path:
    """Where torch-fidelity's loader keeps the Inception weights: ``<torch hub dir>/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_extractor(weights: Path, device: str = "cpu") -> Extractor:
    """torch-fidelity's FID Inception, pool features (2048-d), from a local weights file."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:  # torch-fidelity unpickles the file without weights_only: accept plain tensors only
        torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any refusal or corruption: the same answer)
        raise ConfigError(f"{weights} is not a plain state dict of tensors; not loaded "
                          f"({type(exc).__name__})") from exc
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(weights))
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot load Inception weights {weights}: {exc}") from exc
    net = net.to(device)

    def run(images: Sequence[np.ndarray]) -> np.ndarray:
        feats = []
        with torch.no_grad():
            for img in images:  # one at a time: sizes differ
                x = torch.from_numpy(np.array(img, np.uint8)).permute(2, 0, 1)[None].to(device)
                feats.append(net(x)[0].double().cpu().numpy())
        return np.concatenate(feats, 0) if feats else np.zeros((0, 2048))

    return run


def resolve(weights: Path | None, enabled: bool = True, device: str = "cpu",
            patch: int = 0) -> Realism:
    """The realism setting of a run: ``weights`` if given (must exist), else torch-fidelity's
    file in the torch hub cache if present, else off with the reason. Never downloads."""
    if not enabled:
        return Realism.off("not requested (--no-fid)")
    if patch < 0:
        raise ConfigError("--fid-patch must be 0 (whole images) or a crop size in pixels")
    if weights is not None:
        if not Path(weights).is_file():
            raise ConfigError(f"--inception-weights {weights}: no such file")
        path = Path(weights)
    else:
        path = cached_weights()
        if not path.is_file():
            return Realism.off(
                f"no Inception weights (pass --inception-weights PATH, or put torch-fidelity's "
                f"{INCEPTION_FILE} in the torch hub cache, {_home_relative(path.parent)}); "
                "nothing was downloaded")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return Realism.off("torch-fidelity is not installed")
    return Realism(inception_extractor(path, device), f"torch-fidelity InceptionV3 pool-2048 "
                   f"features of {path.name}", patch)


def crops(image: np.ndarray, patch: int) -> list[np.ndarray]:
    """The samples one image gives: itself (``patch`` 0) or its non-overlapping P×P crops."""
    if patch <= 0:
        return [image]
    h, w = image.shape[:2]
    return [image[y:y + patch, x:x + patch] for y in range(0, h - patch + 1, patch)
            for x in range(0, w - patch + 1, patch)]


class FeatureStore:
    """Features of originals and reconstructions on disk, one ``.npy`` per image or row."""

    def __init__(self, folder: Path, realism: Realism) -> None:
        self.folder = folder
        self.realism = realism

    def original_path(self, image: str) -> Path:
        return self.folder / "original" / f"{image}.npy"

    def row_path(self, codec: str, rate: str, image: str, caption: str = "") -> Path:
        suffix = f"#{caption}" if caption else ""
        return self.folder / f"{codec}@{rate}" / f"{image}{suffix}.npy"

    def _save(self, path: Path, image: np.ndarray) -> None:
        assert self.realism.extractor is not None
        feats = np.asarray(self.realism.extractor(crops(image, self.realism.patch)), np.float64)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, feats.astype(np.float32))
        tmp.replace(path)  # atomic: two ranks saving the same original cannot tear it

    def add(self, codec: str, rate: str, image: str, caption: str, original: np.ndarray,
            decoded: np.ndarray) -> None:
        """Store the features of one measured row (and of its original, once)."""
        if not self.original_path(image).exists():
            self._save(self.original_path(image), original)
        self._save(self.row_path(codec, rate, image, caption), decoded)

    def load(self, path: Path) -> np.ndarray | None:
        try:
            return np.load(path)
        except (OSError, ValueError):
            return None


def distances(real: np.ndarray, fake: np.ndarray) -> dict[str, float | None]:
    """FID and KID (mean, std over subsets) of two (N, D) feature sets, by torch-fidelity.

    FID needs ≥ 2 samples per set; KID uses subsets of min(1000, N_real, N_fake) samples and
    needs ≥ 2.
    """
    import torch
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    out: dict[str, float | None] = {"fid": None, "kid": None, "kid_std": None}
    n = min(len(real), len(fake))
    if n < 2:
        return out
    r = torch.from_numpy(np.array(real, np.float64))  # a copy: torch refuses negative strides
    f = torch.from_numpy(np.array(fake, np.float64))
    fid = fid_statistics_to_metric(fid_features_to_statistics(r), fid_features_to_statistics(f),
                                   verbose=False)[KEY_METRIC_FID]
    kid = kid_features_to_metric(r, f, kid_subsets=KID_SUBSETS, kid_subset_size=min(KID_SUBSET_SIZE, n),
                                 verbose=False, rng_seed=2020)
    out["fid"] = float(fid) if math.isfinite(fid) else None
    out["kid"] = float(kid[KEY_METRIC_KID_MEAN])
    out["kid_std"] = float(kid[KEY_METRIC_KID_STD])
    return out


def summarize(store: FeatureStore, rows: Iterable[Row], images: Sequence[str],
              by_caption: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """{codec: {rate: {fid, kid, kid_std, samples, missing}}} over the rows of each point.

    The real set is every original image of the run (each once), the fake set every row's
    reconstruction (under ``each`` several per image; ``by_caption``: their features are stored
    per caption index). A point with rows whose features are
    missing (measured by a run without FID) gets no numbers, and says how many are missing.
    """
    real_parts = [store.load(store.original_path(name)) for name in images]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.codec, row.rate_key), []).append(row)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (codec, rate), members in groups.items():
        fake_parts = [store.load(store.row_path(codec, rate, r.image,
                                                str(r.caption) if by_caption and r.caption is not None
                                                else ""))
                      for r in members]
        missing = sum(p is None for p in fake_parts)
        point: dict[str, Any] = {"fid": None, "kid": None, "kid_std": None, "missing": missing}
        used_images = {r.image for r in members}
        real = [p for p, name in zip(real_parts, images, strict=True) if name in used_images]
        if not missing and all(p is not None for p in real):
            fake = np.concatenate([p for p in fake_parts if p is not None], 0)
            real_arr = np.concatenate([p for p in real if p is not None], 0)
            point.update(distances(real_arr, fake))
            point["samples"] = [len(real_arr), len(fake)]
        elif not missing:
            point["missing"] = len(members)  # the originals' features are gone: none usable
        out.setdefault(codec, {})[rate] = point
    return out
