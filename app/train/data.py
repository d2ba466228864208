"""Training data: (image crop, caption) pairs from caption folders and COCO annotation files.

Design for a 2-core CPU machine, where any extra per-step work slows training noticeably:

* **Decode once, crop many times.** Every image is decoded once at start-up, converted to RGB
  (greyscale, CMYK, palette, 16-bit and alpha are handled; alpha is flattened onto white), and
  **downscaled so its short side is at most ``cache_short_side`` (default 384 px)** before it is
  kept in RAM as a uint8 array. JPEGs use Pillow's DCT-domain ``draft`` mode, so large photos decode
  at a fraction of the cost. The downscale is a deliberate deviation from the official recipe
  (random 256² crops of full-resolution COCO): at 128²/256² crops it makes a crop cover more of the
  scene, it removes sensor noise and JPEG blocking (which a codec would otherwise spend bits on),
  and it keeps ~950 images in well under 1 GB. Images whose short side is below the crop size are
  **resized up** (bicubic) to exactly the crop size on the short side, never padded.
* **Cheap per-sample work.** ``__getitem__`` only slices a random crop, flips it horizontally with
  probability 0.5 and converts it to a float tensor in [0, 1]: microseconds, so DataLoader workers
  0 (default) or 1 are enough.
* **Reproducible, resumable order.** :class:`InfiniteShardedSampler` yields ``(index, seed)`` keys
  from a per-epoch permutation seeded by ``(seed, epoch)``; each rank of a DDP run takes every
  ``world``-th entry. The crop, flip and caption choice come from ``numpy.random.default_rng(seed)``
  of that key, so a resumed run sees exactly the samples it would have seen, with any worker count.

Captions: a folder source reads a ``{filename: caption | [captions]}`` JSON (the format of
``../shared/data/*/captions.json``); a COCO source reads ``{"images": [{id, file_name}],
"annotations": [{image_id, caption}]}``. One caption is sampled per step; images without a
caption get ``""``.

Hard rule: Kodak and ``coco_val2017`` are the held-out evaluation sets, never used for training,
fine-tuning or model selection. Any path that resolves into a folder named exactly ``kodak`` or
``coco_val2017`` (case-insensitive; so ``coco_val2017_train`` is allowed) raises
:class:`EvalDataError`, for image roots, caption files and every single image file (symlinks are
resolved).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler

from app.errors import ConfigError

#: Folder names that hold evaluation data and must never feed training (exact, case-insensitive).
FORBIDDEN_DIR_NAMES: frozenset[str] = frozenset({"kodak", "coco_val2017"})
#: File extensions read as images by folder sources.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
)
#: Default cap on the short side of cached images (see the module docstring).
DEFAULT_CACHE_SHORT_SIDE = 384


class EvalDataError(ConfigError):
    """A training data path points into an evaluation-only folder (Kodak, coco_val2017)."""


def check_not_eval_path(path: str | os.PathLike[str], what: str = "data path") -> Path:
    """Resolve ``path`` and raise :class:`EvalDataError` if any component is an eval folder.

    Only exact folder names match: ``coco_val2017`` is refused, ``coco_val2017_train`` is not.
    Returns the resolved path.
    """
    resolved = Path(path).expanduser().resolve()
    for part in (*resolved.parts, *Path(path).expanduser().parts):
        if part.casefold() in FORBIDDEN_DIR_NAMES:
            raise EvalDataError(
                f"{what} {str(path)!r} resolves into the evaluation-only folder {part!r} "
                f"({resolved}); Kodak and coco_val2017 must never be used for training"
            )
    return resolved


# --------------------------------------------------------------------------------------------
# Image decoding and caching
# --------------------------------------------------------------------------------------------


def load_rgb(path: str | os.PathLike[str], max_short_side: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB, optionally shrinking JPEGs in the DCT domain.

    EXIF orientation is applied; greyscale, CMYK, palette and 16-bit images become RGB; alpha is
    composited onto white. With ``max_short_side`` a JPEG is decoded by Pillow's ``draft`` at the
    smallest power-of-two reduction that keeps its short side >= ``max_short_side`` (the exact
    resize happens in :func:`fit_short_side`).
    """
    with Image.open(path) as img:
        if max_short_side is not None and img.format == "JPEG":
            w, h = img.size
            scale = max_short_side / min(w, h)
            if scale < 1.0:
                img.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
        img.load()
        out: Image.Image = img
        try:
            out = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block must not lose the image
            pass
        return to_rgb(out)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB (alpha flattened onto white, 16-bit scaled to 8-bit)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def fit_short_side(img: Image.Image, max_short: int | None, min_short: int) -> Image.Image:
    """Resize so that ``min_short <= short side <= max_short`` (aspect ratio kept).

    Downscaling uses Lanczos (antialiased); upscaling (images smaller than the crop) bicubic.
    """
    w, h = img.size
    short = min(w, h)
    target = short
    if max_short is not None and short > max_short:
        target = max_short
    if target < min_short:
        target = min_short
    if target == short:
        return img
    scale = target / short
    if w <= h:
        new = (target, max(target, round(h * scale)))
    else:
        new = (max(target, round(w * scale)), target)
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return img.resize(new, resample=resample)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One training image and all its captions (may be empty)."""

    path: Path
    captions: list[str] = field(default_factory=list)


def _caption_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if isinstance(v, str) and str(v).strip()]
    raise ConfigError(f"caption entries must be strings or lists of strings, got {type(value)}")


def _resolve_under(base: Path, value: str | os.PathLike[str]) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def folder_records(
    root: str | os.PathLike[str],
    captions: str | os.PathLike[str] | None = None,
    recursive: bool = True,
    only_captioned: bool = False,
) -> list[Record]:
    """Records for every image under ``root`` (sorted), with captions from a JSON map.

    ``captions`` (absolute, or relative to ``root``) maps a file name to a caption or a list of
    captions; keys may be the path relative to ``root`` (``"bsds500/val/1.jpg"``) or the bare file
    name. Without ``captions``, a ``captions.json`` in ``root`` is used if present.
    """
    root_p = check_not_eval_path(root, "image folder")
    if not root_p.is_dir():
        raise ConfigError(f"image folder not found: {root}")
    cap_map: dict[str, Any] = {}
    cap_path: Path | None
    if captions is not None:
        cap_path = _resolve_under(root_p, captions)
    else:
        cap_path = root_p / "captions.json"
        if not cap_path.is_file():
            cap_path = None
    if cap_path is not None:
        check_not_eval_path(cap_path, "caption file")
        if not cap_path.is_file():
            raise ConfigError(f"caption file not found: {cap_path}")
        with open(cap_path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ConfigError(f"{cap_path}: expected a JSON object filename -> caption(s)")
        cap_map = data
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p for p in root_p.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    out: list[Record] = []
    for f in files:
        rel = f.relative_to(root_p).as_posix()
        caps = _caption_list(cap_map.get(rel, cap_map.get(f.name)))
        if only_captioned and not caps:
            continue
        out.append(Record(f, caps))
    return out


def coco_records(
    images: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    skip_missing: bool = True,
) -> list[Record]:
    """Records from a COCO caption annotation file (``captions_*.json`` layout).

    ``annotations`` (absolute, or relative to ``images``) holds ``images`` entries
    (``id``, ``file_name``) and ``annotations`` entries (``image_id``, ``caption``). Images listed but
    absent from the folder are skipped (``skip_missing``) or raise.
    """
    img_root = check_not_eval_path(images, "COCO image folder")
    ann_path = _resolve_under(img_root, annotations)
    check_not_eval_path(ann_path, "COCO annotation file")
    if not ann_path.is_file():
        raise ConfigError(f"COCO annotation file not found: {ann_path}")
    with open(ann_path, encoding="utf-8") as fh:
        data = json.load(fh)
    try:
        id_to_file = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        caps: dict[int, list[str]] = {i: [] for i in id_to_file}
        for ann in data.get("annotations", []):
            iid = int(ann["image_id"])
            if iid in caps:
                caps[iid].extend(_caption_list(ann.get("caption")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{ann_path}: not a COCO caption file ({exc})") from None
    out: list[Record] = []
    for iid in sorted(id_to_file, key=lambda i: id_to_file[i]):
        f = img_root / id_to_file[iid]
        if not f.is_file():
            if skip_missing:
                continue
            raise ConfigError(f"COCO image missing: {f}")
        out.append(Record(f, caps[iid]))
    return out


def records_from_sources(
    sources: Sequence[dict[str, Any]],
    data_root: str | os.PathLike[str] | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> list[Record]:
    """Combine several sources (config dicts) into one record list, minus ``exclude``.

    A source is ``{"type": "folder", "root": DIR, "captions": JSON?, "recursive": bool,
    "only_captioned": bool, "repeat": int}`` or ``{"type": "coco", "images": DIR,
    "annotations": JSON, "repeat": int}``. Relative paths resolve against ``data_root``.
    ``repeat`` (default 1) lists a source several times, to re-weight small captioned sets.
    ``exclude`` holds image paths reserved for validation; they never enter training.
    Duplicate files (the same resolved path from two sources) are kept once per listing.
    """
    base = Path(data_root).expanduser() if data_root is not None else Path.cwd()
    excluded = {Path(p).expanduser().resolve() for p in exclude}
    out: list[Record] = []
    for i, src in enumerate(sources):
        kind = src.get("type", "folder")
        repeat = int(src.get("repeat", 1))
        if kind == "folder":
            recs = folder_records(
                _resolve_under(base, src["root"]),
                captions=src.get("captions"),
                recursive=bool(src.get("recursive", True)),
                only_captioned=bool(src.get("only_captioned", False)),
            )
        elif kind == "coco":
            recs = coco_records(
                _resolve_under(base, src["images"]),
                src["annotations"],
                skip_missing=bool(src.get("skip_missing", True)),
            )
        else:
            raise ConfigError(f"data source {i}: unknown type {kind!r} (folder | coco)")
        recs = [r for r in recs if r.path.resolve() not in excluded]
        for r in recs:  # symlinked files pointing into eval folders
            check_not_eval_path(r.path, "image file")
        out.extend(recs * max(repeat, 1))
    if not out:
        raise ConfigError("the training data sources hold no images")
    return out


# --------------------------------------------------------------------------------------------
# Dataset and sampler
# --------------------------------------------------------------------------------------------


class CaptionedImageDataset(Dataset):
    """Random crops of RAM-cached images, each with one sampled caption.

    ``dataset[(index, seed)]`` -> ``(image, caption)``: ``image`` is a (3, crop, crop) float32
    tensor in [0, 1]; the crop position, flip and caption are drawn from
    ``numpy.random.default_rng(seed)``. ``dataset[index]`` draws the seed from torch's RNG.
    """

    def __init__(
        self,
        records: Sequence[Record],
        crop: int = 256,
        cache_short_side: int | None = DEFAULT_CACHE_SHORT_SIDE,
        hflip: bool = True,
        log: Any = None,
    ) -> None:
        if crop <= 0:
            raise ConfigError(f"crop must be positive, got {crop}")
        if cache_short_side is not None and cache_short_side < crop:
            raise ConfigError(f"cache_short_side {cache_short_side} is below the crop size {crop}")
        self.records = list(records)
        self.crop = int(crop)
        self.hflip = bool(hflip)
        self.cache_short_side = cache_short_side
        t0 = time.perf_counter()
        cache: dict[Path, np.ndarray] = {}
        self.images: list[np.ndarray] = []
        for r in self.records:
            key = r.path.resolve()
            if key not in cache:
                img = load_rgb(r.path, cache_short_side)
                img = fit_short_side(img, cache_short_side, self.crop)
                cache[key] = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
            self.images.append(cache[key])
        self.cache_bytes = sum(a.nbytes for a in cache.values())
        self.decode_seconds = time.perf_counter() - t0
        if log is not None:
            log(
                f"data: {len(self.records)} samples, {len(cache)} distinct images cached "
                f"({self.cache_bytes / 2**20:.0f} MiB, short side <= {cache_short_side}) "
                f"in {self.decode_seconds:.1f} s"
            )

    def __len__(self) -> int:
        return len(self.records)

    def captions(self) -> list[str]:
        """Every distinct caption (plus ``""``), in a stable order: for text-state caching."""
        seen: dict[str, None] = {"": None}
        for r in self.records:
            for c in r.captions:
                seen.setdefault(c, None)
        return list(seen)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, str]:
        if isinstance(key, tuple | list):
            index, seed = int(key[0]), int(key[1])
        else:
            index, seed = int(key), int(torch.randint(0, 2**62, ()).item())
        rng = np.random.default_rng(seed)
        arr = self.images[index]
        h, w = arr.shape[:2]
        c = self.crop
        top = int(rng.integers(0, h - c + 1))
        left = int(rng.integers(0, w - c + 1))
        patch = arr[top : top + c, left : left + c]
        if self.hflip and rng.random() < 0.5:
            patch = patch[:, ::-1]
        img = torch.from_numpy(np.array(patch)).permute(2, 0, 1).float().div_(255.0)
        caps = self.records[index].captions
        caption = caps[int(rng.integers(0, len(caps)))] if caps else ""
        return img, caption


class InfiniteShardedSampler(Sampler):
    """Endless ``(index, seed)`` keys: per-epoch permutations, sharded over DDP ranks.

    Epoch ``e`` uses ``torch.randperm(n)`` from a generator seeded ``seed * 1_000_003 + e``; rank
    ``r`` of ``world`` takes positions ``r, r + world, ...`` of that permutation (every rank gets
    ``n // world`` samples per epoch, the remainder is dropped). ``start`` skips that many samples
    of this rank, so a resumed run continues the exact sequence.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0):
        if n < world:
            raise ConfigError(f"{n} training samples cannot be split over {world} ranks")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start
        self.per_epoch = n // world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        while True:
            epoch, off = divmod(pos, self.per_epoch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)[self.rank :: self.world][: self.per_epoch]
            for i in range(off, self.per_epoch):
                gpos = (epoch * self.per_epoch + i) * self.world + self.rank
                yield int(perm[i]), (self.seed * 2_654_435_761 + gpos) % 2**62
            pos = (epoch + 1) * self.per_epoch

    def __len__(self) -> int:  # endless; a large number keeps DataLoader happy
        return 2**62


def collate(batch: Sequence[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    """Stack images, keep captions as a list of strings."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def _first_caption_beside(path: Path) -> str:
    cap_file = path.parent / "captions.json"
    if not cap_file.is_file():
        return ""
    try:
        data = json.loads(cap_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    caps = _caption_list(data.get(path.name)) if isinstance(data, dict) else []
    return caps[0] if caps else ""


def load_eval_images(
    items: Sequence[str | os.PathLike[str]],
    data_root: str | os.PathLike[str] | None = None,
    captions: dict[str, str] | None = None,
    max_side: int | None = 512,
) -> list[tuple[str, np.ndarray, str]]:
    """Held-out validation images: ``[(name, uint8 HxWx3, caption)]``.

    They must also pass :func:`check_not_eval_path`: model selection on Kodak or coco_val2017 is
    forbidden too. Images larger than ``max_side`` are downscaled (Lanczos) to keep evaluation cheap.
    The caption is ``captions[item]`` if given, else the first caption of the image in a
    ``captions.json`` beside it, else ``""``.
    """
    base = Path(data_root).expanduser() if data_root is not None else Path.cwd()
    out: list[tuple[str, np.ndarray, str]] = []
    for item in items:
        p = _resolve_under(base, item)
        check_not_eval_path(p, "validation image")
        if not p.is_file():
            raise ConfigError(f"validation image not found: {p}")
        img = load_rgb(p)
        if max_side is not None and max(img.size) > max_side:
            s = max_side / max(img.size)
            img = img.resize(
                (max(1, round(img.width * s)), max(1, round(img.height * s))),
                Image.Resampling.LANCZOS,
            )
        cap = (captions or {}).get(str(item))
        if cap is None:
            cap = _first_caption_beside(p)
        out.append((Path(item).as_posix(), np.asarray(img, dtype=np.uint8), cap))
    return out
