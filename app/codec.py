"""One `Codec` interface for TACO, ELIC and the classical codecs.

>>> from app.codec import load_codec, decompress
>>> codec = load_codec("taco")                       # embedded, shipped weights
>>> data = codec.compress(img, caption="a red car", lmbda=0.01)   # -> bytes (.taco file)
>>> rec = decompress(data)                           # no caption needed: the decoder is text-free

Learned codecs write the `.taco` container of :mod:`app.bitstream`; classical codecs (JPEG, WebP,
AVIF) return their own file bytes. Images are padded to a multiple of 64 (edge replication; the
padded pixels cost bits, which are counted) and cropped back inside the codec; bpp is always
8·len(bytes)/(H·W) of the original image.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from app import bitstream
from app.errors import BitstreamError, ConfigError, MissingModelError, TacoError
from app.images import ImageLike, to_rgb_array
from app.lpips_offline import sha256_file
from app.metrics import bpp

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = Path(os.environ.get("TACO_CHECKPOINT_DIR", ROOT / "checkpoints"))
OFFICIAL_DIR = Path(os.environ.get("TACO_OFFICIAL_DIR", CHECKPOINT_DIR / "official"))
MANIFEST = CHECKPOINT_DIR / "manifest.json"
PAD = 64
#: Coding paths a learned codec can encode with (the file records which one it used).
CODINGS = (bitstream.PORTABLE, bitstream.FLOAT)
#: The six released TACO rate points: the λ's of the official ``lambda_*.pth.tar`` checkpoints.
OFFICIAL_LAMBDAS = (0.0004, 0.0008, 0.0016, 0.004, 0.009, 0.015)
_OFFICIAL_RE = re.compile(r"lambda_([0-9.eE+-]+)\.pth(?:\.tar)?$")

# --- Robustness review (docs/ROBUSTNESS.md): bounds for hostile `.taco` files -------------------
#: Largest image (pixels) a learned codec encodes or decodes. The header allows 16384x16384 and the
#: decoder's work follows the *claimed* size, not the file size: a 193-byte forged file claiming
#: 2048x2048 costs 4 s / 0.4 GB on the tiny model, and the official N192/M320 architecture needs
#: ~13 s and ~0.65 GB per megapixel on one core, i.e. about an hour and 170 GB at 16384x16384
#: (scripts/robustness_report.py --forged --official-cost). So decoding is refused above this bound
#: before any model runs, and encoding refuses the same sizes so that every file we write can be
#: read back. 2048x2048 covers Kodak, CLIC and Tecnick; ``TACO_MAX_PIXELS`` overrides it (a public
#: Space should use ~1 MP).
MAX_CODEC_PIXELS = int(os.environ.get("TACO_MAX_PIXELS", str(2048 * 2048)))
#: Entropy-coded strings longer than this many bytes per pixel (32 bpp) are not from our encoder.
MAX_STRING_BYTES_PER_PIXEL = 4


@runtime_checkable
class Codec(Protocol):
    """What every codec in the project offers."""

    name: str
    rate_range: tuple[float, float] | None
    rate_ladder: list[float] | None

    def compress(
        self,
        image: ImageLike,
        caption: str = "",
        lmbda: float | None = None,
        target_bpp: float | None = None,
    ) -> bytes: ...

    def decompress(self, data: bytes) -> Image.Image: ...


@dataclass
class Encoded:
    """A compressed image and what it cost."""

    data: bytes
    height: int
    width: int
    lmbda: float | None
    encode_ms: float

    @property
    def bpp(self) -> float:
        return bpp(self.data, self.height, self.width)


def as_float32(x: float) -> float:
    """Round a rate parameter to what the header stores, so encoder and decoder agree."""
    return struct.unpack(">f", struct.pack(">f", float(x)))[0]


# --------------------------------------------------------------------------- weights bookkeeping


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime: float) -> str:
    return sha256_file(Path(path))


def weights_sha256(path: Path) -> str:
    st = path.stat()
    return _cached_sha256(str(path), st.st_size, st.st_mtime)


def load_manifest() -> dict[str, Any]:
    if not MANIFEST.is_file():
        return {}
    return json.loads(MANIFEST.read_text())


def random_fingerprint(config_name: str) -> str:
    """Fingerprint of a deterministic random initialisation (development and tests only)."""
    return hashlib.sha256(f"random-init-v1:{config_name}".encode()).hexdigest()


# --------------------------------------------------------------------------- learned codecs


@dataclass
class _Variant:
    """One set of weights: a model, its rate point (fixed-rate) and its fingerprint."""

    cfg: dict
    source: Path | None  # weights file, None = random init
    fixed_lmbda: float | None
    fingerprint_hex: str | None = None
    model: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def fingerprint(self) -> bytes:
        if self.fingerprint_hex is None:
            assert self.source is not None
            self.fingerprint_hex = weights_sha256(self.source)
        return bytes.fromhex(self.fingerprint_hex)[: bitstream.FINGERPRINT_BYTES]


class LearnedCodec:
    """TACO or ELIC (any size) behind the :class:`Codec` interface.

    A variable-rate model offers a continuous λ in ``rate_range`` from one set of weights (gain
    units); a fixed-rate family (the official checkpoints) offers the λ values of ``rate_ladder``,
    one set of weights each.
    """

    def __init__(self, name: str, variants: list[_Variant], description: str = "",
                 coding: str = bitstream.PORTABLE, device: str = "cpu"):
        if not variants:
            raise ConfigError(f"codec {name!r} has no weights")
        if coding not in CODINGS:
            raise ConfigError(f"coding must be one of {', '.join(CODINGS)}, got {coding!r}")
        self.name = name
        #: How this codec *encodes*: "portable" (exact entropy model, decodes the same on every
        #: machine) or "float" (the official float32 arithmetic). Decoding follows each file.
        self.coding = coding
        #: Where the model runs ("cpu", "cuda", "cuda:1"); files are the same bytes-level format
        #: everywhere, and portable ones decode the same on any device.
        self.device = device
        self.description = description
        self._variants = variants
        self.cfg = variants[0].cfg
        self.arch: str = self.cfg["arch"]
        self.text_encoder_kind: str | None = (
            self.cfg.get("text_encoder") if self.arch == "taco" else None
        )
        if len(variants) == 1 and variants[0].fixed_lmbda is None and self.cfg.get("variable_rate"):
            lo, hi = self.cfg["lmbda_range"]
            self.rate_range: tuple[float, float] | None = (float(lo), float(hi))
            self.rate_ladder: list[float] | None = None
        else:
            self.rate_range = None
            self.rate_ladder = sorted(v.fixed_lmbda for v in variants if v.fixed_lmbda is not None)
            if len(self.rate_ladder) != len(variants):
                raise ConfigError(f"codec {name!r}: fixed-rate weights need a λ each")

    # -- model access -------------------------------------------------------------------------

    @property
    def default_lmbda(self) -> float:
        if self.rate_range is not None:
            lo, hi = self.rate_range
            return as_float32(math.sqrt(lo * hi))
        assert self.rate_ladder
        return self.rate_ladder[len(self.rate_ladder) // 2]

    def _variant(self, lmbda: float | None) -> _Variant:
        if self.rate_range is not None:
            return self._variants[0]
        assert self.rate_ladder is not None
        if lmbda is None:
            lmbda = self.default_lmbda
        return min(self._variants, key=lambda v: abs(math.log(v.fixed_lmbda / lmbda)))

    def _model(self, variant: _Variant):
        with variant.lock:
            if variant.model is None:
                variant.model = _build_model(variant).to(self.device)
            return variant.model

    def resolve_lmbda(self, lmbda: float | None) -> float:
        """Clamp / snap a requested rate parameter to what this codec offers (float32-exact)."""
        if lmbda is None:
            return self.default_lmbda
        if not (isinstance(lmbda, int | float) and math.isfinite(lmbda) and lmbda > 0):
            raise TacoError(f"rate parameter λ must be a positive number, got {lmbda!r}")
        if self.rate_range is not None:
            lo, hi = self.rate_range
            return as_float32(min(max(float(lmbda), lo), hi))
        return float(self._variant(lmbda).fixed_lmbda)

    def fingerprint(self, lmbda: float | None = None) -> bytes:
        return self._variant(self.resolve_lmbda(lmbda)).fingerprint

    # -- text ---------------------------------------------------------------------------------

    def text_states(self, caption: str):
        """Per-token text states for the encoder (None for ELIC)."""
        if self.arch != "taco":
            return None
        from app.text import clean_caption, get_text_encoder

        enc = get_text_encoder(self.text_encoder_kind)
        return enc.encode([clean_caption(caption or "")]).to(self.device)

    # -- coding -------------------------------------------------------------------------------

    def _encode_once(self, x_pad, h: int, w: int, text, lmbda: float) -> bytes:
        import torch

        variant = self._variant(lmbda)
        model = self._model(variant)
        rate_arg = lmbda if self.rate_range is not None else None
        with torch.inference_mode():
            if self.arch == "taco":
                out = model.compress(x_pad, text, lmbda=rate_arg, coding=self.coding)
            else:
                out = model.compress(x_pad, lmbda=rate_arg, coding=self.coding)
        strings = [s[0] if isinstance(s, list | tuple) else s for s in out["strings"]]
        header = bitstream.Header(self.name, variant.fingerprint, lmbda, h, w, self.coding,
                                  out["tables_crc"], out["symbols_crc"][0])
        return bitstream.pack(header, strings)

    def encode(
        self,
        image: ImageLike,
        caption: str = "",
        lmbda: float | None = None,
        target_bpp: float | None = None,
    ) -> Encoded:
        """Compress and report the cost; ``target_bpp`` searches λ (overrides ``lmbda``)."""
        arr = to_rgb_array(image)
        h, w = arr.shape[:2]
        if h > bitstream.MAX_SIDE or w > bitstream.MAX_SIDE:
            raise TacoError(f"image sides must be at most {bitstream.MAX_SIDE} px")
        if h * w > MAX_CODEC_PIXELS:  # robustness review: never write a file we refuse to decode
            raise TacoError(
                f"image is {w}x{h} ({h * w / 1e6:.1f} MP): the learned codecs take at most "
                f"{MAX_CODEC_PIXELS / 1e6:.1f} MP (TACO_MAX_PIXELS); downscale it first"
            )
        t0 = time.perf_counter()
        x_pad = pad_tensor(arr).to(self.device)
        text = self.text_states(caption)
        if target_bpp is not None:
            if not (math.isfinite(target_bpp) and target_bpp > 0):
                raise TacoError(f"target bpp must be a positive number, got {target_bpp!r}")
            data, lam = self._search_bpp(x_pad, h, w, text, float(target_bpp))
        else:
            lam = self.resolve_lmbda(lmbda)
            data = self._encode_once(x_pad, h, w, text, lam)
        return Encoded(data, h, w, lam, (time.perf_counter() - t0) * 1e3)

    def _search_bpp(self, x_pad, h, w, text, target: float) -> tuple[bytes, float]:
        """Closest real-bytes bpp to ``target`` (bisection on log λ, or the best ladder point)."""
        tried: dict[float, bytes] = {}

        def run(lam: float) -> float:
            lam = self.resolve_lmbda(lam)
            if lam not in tried:
                tried[lam] = self._encode_once(x_pad, h, w, text, lam)
            return bpp(tried[lam], h, w)

        if self.rate_ladder is not None:
            for lam in self.rate_ladder:
                run(lam)
        else:
            lo, hi = (math.log(v) for v in self.rate_range)  # type: ignore[union-attr]
            if run(math.exp(lo)) < target < run(math.exp(hi)):
                for _ in range(12):
                    mid = 0.5 * (lo + hi)
                    b = run(math.exp(mid))
                    if abs(b - target) <= 0.01 * target:
                        break
                    lo, hi = (mid, hi) if b < target else (lo, mid)
        best = min(tried, key=lambda lam: abs(bpp(tried[lam], h, w) - target))
        return tried[best], best

    def compress(
        self,
        image: ImageLike,
        caption: str = "",
        lmbda: float | None = None,
        target_bpp: float | None = None,
    ) -> bytes:
        return self.encode(image, caption, lmbda, target_bpp).data

    def _unpack_own(self, data: bytes) -> tuple[bitstream.Header, list[bytes]]:
        """Validate a `.taco` file and check that this codec made it."""
        header, strings = bitstream.unpack(data)
        if header.model_id != self.name:
            raise BitstreamError(
                f"bitstream was made by {header.model_id!r}, not by {self.name!r}"
            )
        return header, strings

    def decompress(self, data: bytes) -> Image.Image:
        return self._decode(*self._unpack_own(data))

    def decompress_float(self, data: bytes) -> np.ndarray:
        """Decoder output as an (H, W, 3) float32 array, **unclamped and unrounded**.

        This is what the paper's PSNR is computed on (its eval scripts use the raw x̂); the image
        returned by :meth:`decompress` is the clamped 8-bit version a user sees.
        """
        x_hat = self._decode_tensor(*self._unpack_own(data))
        return np.ascontiguousarray(x_hat.permute(1, 2, 0).float().numpy())

    def _decode(self, header: bitstream.Header, strings: list[bytes]) -> Image.Image:
        import torch

        x_hat = self._decode_tensor(header, strings)
        arr = (x_hat.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")

    def _decode_tensor(self, header: bitstream.Header, strings: list[bytes]):
        """Validate the header against this codec and run the decoder: (3, H, W) float."""
        import torch

        lam = header.lmbda
        if self.rate_ladder is not None:
            if lam is None or min(abs(math.log(v / lam)) for v in self.rate_ladder) > 1e-3:
                raise BitstreamError(f"bitstream rate λ={lam} is not one of this model's rates")
        elif lam is None or not (
            self.rate_range[0] * 0.999 <= lam <= self.rate_range[1] * 1.001  # type: ignore[index]
        ):
            raise BitstreamError(f"bitstream rate λ={lam} is outside this model's range")
        variant = self._variant(lam)
        if header.fingerprint != variant.fingerprint:
            raise BitstreamError(
                f"bitstream was made with other {self.name} weights "
                f"({header.fingerprint.hex()} vs loaded {variant.fingerprint.hex()})"
            )
        if len(strings) != 2:
            raise BitstreamError(f"expected 2 entropy-coded strings, found {len(strings)}")
        # Robustness review: bound the work a forged (valid-CRC) header can ask for.
        if header.pixels > MAX_CODEC_PIXELS:
            raise BitstreamError(
                f"bitstream claims a {header.width}x{header.height} image "
                f"({header.pixels / 1e6:.1f} MP): more than the {MAX_CODEC_PIXELS / 1e6:.1f} MP "
                "this build decodes (TACO_MAX_PIXELS)"
            )
        if sum(map(len, strings)) > MAX_STRING_BYTES_PER_PIXEL * header.pixels + 65536:
            raise BitstreamError("corrupted .taco file (entropy-coded data too large for its size)")
        model = self._model(variant)
        ph, pw = _padded(header.height), _padded(header.width)
        shape = (ph // 64, pw // 64)
        rate_arg = lam if self.rate_range is not None else None
        n_y = int(self.cfg.get("M", 320)) * (ph // 16) * (pw // 16)
        n_z = int(self.cfg.get("N", 192)) * (ph // 64) * (pw // 64)
        y_string, z_string = _rans_guard(strings[0], n_y), _rans_guard(strings[1], n_z)
        if header.tables_crc is not None:
            tables_crc = model.coder(header.coding)[1].crc
            if tables_crc != header.tables_crc:
                raise BitstreamError(
                    f"encoded with {header.coding} coding tables this machine does not reproduce "
                    f"(tables check {header.tables_crc:08x}, here {tables_crc:08x}): "
                    "it cannot be decoded exactly here"
                )
        try:
            with torch.inference_mode():
                out = model.decompress([[y_string], [z_string]], shape, lmbda=rate_arg,
                                       coding=header.coding)
        except TacoError:
            raise
        except Exception as exc:  # the entropy decoder rejects some garbage itself
            raise BitstreamError(f"bitstream cannot be decoded: {exc}".splitlines()[0]) from None
        if header.symbols_crc is not None and out["symbols_crc"][0] != header.symbols_crc:
            raise BitstreamError(
                "encoded with arithmetic this machine does not reproduce: the decoded latents "
                f"differ from the encoder's (symbols check {header.symbols_crc:08x}, decoded "
                f"{out['symbols_crc'][0]:08x}; a {header.coding}-path file"
                + (", made for the CPU class that wrote it)" if header.coding == bitstream.FLOAT
                   else ")")
            )
        return out["x_hat"][0, :, : header.height, : header.width].cpu()


def _rans_guard(string: bytes, n_symbols: int) -> bytes:
    """Append enough zero bytes that compressai's rANS decoder cannot read past the buffer.

    Robustness review: the C++ decoder (compressai/cpp_exts/rans/rans_interface.cpp) never checks
    the end of its input. A valid-CRC `.taco` whose z string is 200 kB of 0xFF made it read far past
    the buffer and the process died with SIGSEGV (one upload would kill the Space). The reads are
    bounded, though: the state refills one aligned 32-bit word at a time; a normal symbol reads at
    most one word; an escape ("bypass") symbol reads 15 nibbles per 0xF nibble it meets, and a long
    run of 0xF nibbles needs a run of 0xFFFFFFFF words in the data. So, with ``w`` the longest run
    of aligned 0xFFFFFFFF words, the symbol that crosses the end reads at most 60·w + 132 bytes
    beyond it, and every later symbol, decoding from zeros (at most 9 carried 0xF nibbles), at most
    ~92 bytes. Trailing zeros never change a valid stream (the decoder stops where the encoder did).
    """
    import numpy as np

    words = np.frombuffer(string[: len(string) // 4 * 4], dtype="<u4")
    longest = 0
    if words.size:
        ones = np.concatenate(([0], (words == 0xFFFFFFFF).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(ones))
        if edges.size:
            longest = int((edges[1::2] - edges[::2]).max())
    return bytes(string) + bytes(64 * longest + 96 * n_symbols + 1024)


def _padded(n: int) -> int:
    return (n + PAD - 1) // PAD * PAD


def pad_tensor(arr: np.ndarray):
    """(H,W,3) uint8 → (1,3,H',W') float in [0,1], H' and W' multiples of 64 (edge-replicated)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1).div_(255.0)[None]
    h, w = arr.shape[:2]
    ph, pw = _padded(h) - h, _padded(w) - w
    if ph or pw:
        mode = "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x


def _build_model(variant: _Variant):
    """Instantiate a model and load its weights (or a deterministic random init)."""
    import torch

    from app.models.factory import create_model, load_official_checkpoint, load_weights

    cfg = variant.cfg
    if variant.source is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model(cfg)
        model.eval()
        model.update(force=True)
        return model
    path = variant.source
    if path.suffix == ".safetensors":
        model = create_model(cfg)
        load_weights(model, path)
        model.eval()
        model.update(force=True)
        return model
    return load_official_checkpoint(path, cfg)


# --------------------------------------------------------------------------- registry


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
CLASSICAL = ("jpeg", "webp", "avif")


def _allow_random(flag: bool) -> bool:
    return flag or os.environ.get("TACO_ALLOW_RANDOM", "") == "1"


def official_checkpoints(name: str) -> dict[float, Path]:
    """λ → file for the official fixed-rate checkpoints a user dropped into checkpoints/official/."""
    folder = OFFICIAL_DIR if name == "taco-official" else OFFICIAL_DIR / "elic"
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
    path = CHECKPOINT_DIR / entry.get("file", f"{config_name}.safetensors")
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
        return LearnedCodec(name, [_Variant(cfg, path, fixed)], spec.description, coding, device)
    if spec.kind == "official":
        files = official_checkpoints(name)
        if not files:
            where = OFFICIAL_DIR if name == "taco-official" else OFFICIAL_DIR / "elic"
            raise MissingModelError(
                f"no official checkpoints in {where.relative_to(ROOT) if where.is_relative_to(ROOT) else where}: "
                "download lambda_*.pth.tar from the TACO authors and put them there"
            )
        variants = [_Variant(cfg, p, lam) for lam, p in sorted(files.items())]
        return LearnedCodec(name, variants, spec.description, coding, device)
    if spec.kind == "embedded":
        path, sha = _embedded_weights(spec.config)
        if path.is_file():
            actual = weights_sha256(path)
            if sha is not None and actual != sha:
                raise MissingModelError(
                    f"{path.name} does not match checkpoints/manifest.json (sha256 {actual[:12]}…); "
                    "re-download or retrain it"
                )
            return LearnedCodec(name, [_Variant(cfg, path, None, actual)], spec.description,
                                coding, device)
        if not _allow_random(allow_random):
            raise MissingModelError(
                f"weights for {name!r} ({path.name}) are not in checkpoints/: train them with "
                "`python -m app train` or set TACO_ALLOW_RANDOM=1 for random weights (development only)"
            )
    elif not _allow_random(allow_random):
        raise MissingModelError(f"{name!r} has random weights only: pass allow_random=True")
    variant = _Variant(cfg, None, None, random_fingerprint(spec.config))
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


def read_header(data: bytes) -> bitstream.Header:
    """Validate a `.taco` file and return its header (model, rate, size)."""
    return bitstream.read_header(data)


def decode_notes(header: bitstream.Header) -> list[str]:
    """What a user should know about how a file decodes (empty for a portable version-2 file)."""
    if header.version == 1:
        return [
            "version-1 file (made before portable coding): float entropy model and no symbols "
            "check, so it decodes correctly only on a CPU with the encoder's float kernels, and "
            "a wrong result cannot be detected"
        ]
    if header.coding == bitstream.FLOAT:
        return [
            "float-path file (official float32 arithmetic): it decodes only on CPUs whose float "
            "kernels match the encoder's; the symbols check refuses it elsewhere"
        ]
    return []


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


def decompress(data: bytes) -> Image.Image:
    """Decode a `.taco` file with the model its header names. No caption is needed.

    For files from strangers (the demo's decode tab) use `app.sandbox.decompress_untrusted`,
    which runs this decoder in a child process.
    """
    header, strings = bitstream.unpack(data)
    # Robustness review: only loading is inside the try. A BitstreamError raised while decoding
    # (a corrupted or oversized file) must reach the user as it is, not turn into a misleading
    # "has random weights only" / "weights not in checkpoints" error.
    try:
        codec = load_codec(*decoder_key(header))
    except MissingModelError:
        if not any(isinstance(c, LearnedCodec) and c.name == header.model_id for c in loaded_codecs()):
            raise
        # Only other weights of this model are at hand (e.g. a random-weights development codec).
        raise BitstreamError(
            f"bitstream was made with other {header.model_id} weights ({header.fingerprint.hex()})"
        ) from None
    assert isinstance(codec, LearnedCodec)
    return codec._decode(header, strings)


def available_model_sets() -> dict[str, dict[str, str]]:
    """Model sets the UI can offer: label → {"taco": codec name, "elic": codec name}."""
    sets: dict[str, dict[str, str]] = {}
    emb = [n for n in ("taco", "elic") if _embedded_weights(LEARNED[n].config)[0].is_file()]
    if len(emb) == 2 or _allow_random(False):
        sets["Embedded (offline)"] = {"taco": "taco", "elic": "elic"}
    if official_checkpoints("taco-official"):
        elic = "elic-official" if official_checkpoints("elic-official") else "elic"
        sets["Official TACO"] = {"taco": "taco-official", "elic": elic}
    return sets


CodecFactory = Callable[[str], Codec]
