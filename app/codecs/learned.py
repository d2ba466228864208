"""TACO and ELIC (any size, embedded or official weights) behind the `Codec` protocol.

Learned codecs write the `.taco` container of :mod:`app.bitstream`. Images are padded to a multiple
of 64 (edge replication; the padded pixels cost bits, which are counted) and cropped back inside
the codec; bpp is always 8·len(bytes)/(H·W) of the original image. Encoding uses the portable
(exact integer) entropy model unless ``coding="float"``; decoding follows each file's flag.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from app import bitstream
from app.codecs import rate_search
from app.codecs.guards import check_decode_size, check_encode_size, rans_guard
from app.codecs.protocol import Capabilities, Encoded, RateControl, as_float32
from app.codecs.weights import Variant, build_model, pad_tensor, padded
from app.errors import BitstreamError, ConfigError, TacoError
from app.hashing import array_digest
from app.images import ImageLike, to_rgb_array
from app.lru import LRUCache
from app.metrics import bpp
from app.settings import get_settings

#: Coding paths a learned codec can encode with (the file records which one it used).
CODINGS = (bitstream.PORTABLE, bitstream.PORTABLE_WIDE, bitstream.PORTABLE_FULL, bitstream.FLOAT)


# --------------------------------------------------------------------------- learned codecs


class LearnedCodec:
    """TACO or ELIC (any size) behind the :class:`Codec` interface.

    A variable-rate model offers a continuous λ in ``rate_range`` from one set of weights (gain
    units); a fixed-rate family (the official checkpoints) offers the λ values of ``rate_ladder``,
    one set of weights each.
    """

    def __init__(self, name: str, variants: list[Variant], description: str = "",
                 coding: str = bitstream.PORTABLE, device: str = "cpu", max_pixels: int | None = None):
        if not variants:
            raise ConfigError(f"codec {name!r} has no weights")
        if coding not in CODINGS:
            raise ConfigError(f"coding must be one of {', '.join(CODINGS)}, got {coding!r}")
        self.name = name
        #: How this codec *encodes*: "portable" (exact entropy model, decodes the same on every
        #: machine), "portable-wide" / "portable-full" (the arithmetics earlier builds wrote) or
        #: "float" (the official float32 arithmetic). Decoding follows each file.
        self.coding = coding
        #: Where the model runs ("cpu", "cuda", "cuda:1"); files are the same bytes-level format
        #: everywhere, and portable ones decode the same on any device.
        self.device = device
        self.description = description
        self._max_pixels = max_pixels
        # keep_attention is model state: one attention read at a time
        self._attention_lock = threading.Lock()
        self._seen_images = LRUCache(rate_search.SEEN_IMAGES)
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
        rate = (RateControl.continuous(*self.rate_range) if self.rate_range is not None
                else RateControl.of_ladder(self.rate_ladder or []))
        self.capabilities = Capabilities(
            learned=True,
            rate=rate,
            random_weights=all(v.source is None for v in variants),
            text_encoder=self.text_encoder_kind,
            float_decode=True,
            untrusted_decode=True,
            early_reconstruction=True,
        )

    @property
    def max_pixels(self) -> int:
        """Largest image (pixels) this codec encodes or decodes (default: ``TACO_MAX_PIXELS``)."""
        return self._max_pixels if self._max_pixels is not None else get_settings().max_pixels

    @property
    def rate(self) -> RateControl:
        return self.capabilities.rate

    # -- model access -------------------------------------------------------------------------

    @property
    def default_lmbda(self) -> float:
        if self.rate_range is not None:
            lo, hi = self.rate_range
            return as_float32(math.sqrt(lo * hi))
        assert self.rate_ladder
        return self.rate_ladder[len(self.rate_ladder) // 2]

    def _variant(self, lmbda: float | None) -> Variant:
        if self.rate_range is not None:
            return self._variants[0]
        assert self.rate_ladder is not None
        if lmbda is None:
            lmbda = self.default_lmbda
        target = lmbda
        return min(self._variants, key=lambda v: abs(math.log(float(v.fixed_lmbda or 0) / target)))

    def _model(self, variant: Variant):
        with variant.lock:
            if variant.model is None:
                variant.model = build_model(variant).to(self.device)
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
        fixed = self._variant(lmbda).fixed_lmbda
        assert fixed is not None  # a ladder variant always has its λ
        return float(fixed)

    def fingerprint(self, lmbda: float | None = None) -> bytes:
        return self._variant(self.resolve_lmbda(lmbda)).fingerprint

    # -- text ---------------------------------------------------------------------------------

    def text_states(self, caption: str):
        """Per-token text states for the encoder (None for ELIC)."""
        if self.arch != "taco":
            return None
        from app.text import clean_caption, get_text_encoder

        assert self.text_encoder_kind is not None  # every TACO config names its text encoder
        enc = get_text_encoder(self.text_encoder_kind)
        return enc.encode([clean_caption(caption or "")]).to(self.device)

    def attention_maps_kept(self) -> bool:
        """Whether any loaded TACO model still keeps attention weights (False between reads)."""
        for v in self._variants:
            model = v.model
            if model is not None and hasattr(model, "adapter"):
                if any(model.adapter(b).keep_attention for b in ("injector1", "extractor", "injector2")):
                    return True
        return False

    def attention(self, image: ImageLike, caption: str = "", lmbda: float | None = None
                  ) -> dict[str, np.ndarray]:
        """The text adapter's head-averaged cross-attention for ``image`` and ``caption``.

        Runs the analysis transform only (what `encode` runs before entropy coding, so the maps are
        those of the file `encode` would write) and returns, per adapter block, an (L, h, w) float32
        array over the padded image: ``injector1`` (1/4 resolution) and ``injector2`` (1/8) give,
        for each image position, its attention share of each of the L text positions (summing to 1
        over L); ``extractor`` (1/8) gives where each text position looks (summing to 1 over h·w).
        """
        import torch

        if self.arch != "taco":
            raise TacoError(f"{self.name} has no text adapter: only TACO reads a caption")
        arr = to_rgb_array(image)
        check_encode_size(arr.shape[0], arr.shape[1], self.max_pixels)
        lam = self.resolve_lmbda(lmbda)
        variant = self._variant(lam)
        model = self._model(variant)
        x_pad = pad_tensor(arr).to(self.device)
        text = self.text_states(caption)
        rate_arg = lam if self.rate_range is not None else None
        with self._attention_lock, torch.inference_mode():
            model.keep_attention(True)
            try:
                model._encode_latent(x_pad, text, rate_arg, None)
                maps = model.attention_maps()
            finally:
                model.keep_attention(False)
        return {k: np.ascontiguousarray(v[0].float().cpu().numpy()) for k, v in maps.items()}

    # -- coding -------------------------------------------------------------------------------

    def _encode_once(self, x_pad, h: int, w: int, text, lmbda: float,
                     seen: rate_search.SeenImage | None = None) -> tuple[bytes, Any]:
        """One real file at ``lmbda`` and its quantised latent ŷ; with ``seen``, the analysis
        latent and the file are kept."""
        import torch

        variant = self._variant(lmbda)
        model = self._model(variant)
        with torch.inference_mode():
            if self.rate_range is not None and seen is not None:
                # compress() is compress_latent(scale_latent(analysis(x))): the same file, with
                # the gain-free latent kept for a later bpp search on this image.
                y0 = model.analysis(x_pad, text)
                seen.latent = y0
                out = model.compress_latent(model.scale_latent(y0, lmbda), coding=self.coding)
            elif self.arch == "taco":
                out = model.compress(x_pad, text, lmbda=self._rate_arg(lmbda), coding=self.coding)
            else:
                out = model.compress(x_pad, lmbda=self._rate_arg(lmbda), coding=self.coding)
        data = self._pack(variant, out, lmbda, h, w)
        if seen is not None:
            seen.files[lmbda] = data
        return data, out["y_hat"]

    def _rate_arg(self, lmbda: float) -> float | None:
        return lmbda if self.rate_range is not None else None

    def _pack(self, variant: Variant, out: dict[str, Any], lmbda: float, h: int, w: int) -> bytes:
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
        reconstruct: bool = False,
    ) -> Encoded:
        """Compress and report the cost; ``target_bpp`` searches λ (overrides ``lmbda``).

        An encode at a given λ always runs in full (its time is what it costs), and leaves its
        analysis latent and file with the codec (the last `rate_search.SEEN_IMAGES` images): a
        bpp search on the same image and caption then starts from them instead of coding the
        image again. ``reconstruct`` (at a given λ) also returns the decoded image made from the
        encoder's own ŷ — what decoding the file here gives, without its entropy decoding; confirm
        it with :meth:`verify`.
        """
        arr = to_rgb_array(image)
        h, w = arr.shape[:2]
        check_encode_size(h, w, self.max_pixels)
        t0 = time.perf_counter()
        key = (array_digest(arr), caption or "", self.coding, self.device)
        x_pad = pad_tensor(arr).to(self.device)
        text = self.text_states(caption)
        if target_bpp is not None:
            if not (math.isfinite(target_bpp) and target_bpp > 0):
                raise TacoError(f"target bpp must be a positive number, got {target_bpp!r}")
            data, lam = self._search_bpp(x_pad, h, w, text, float(target_bpp),
                                         self._seen_images.get(key))
        else:
            lam = self.resolve_lmbda(lmbda)
            seen = rate_search.SeenImage()
            data, y_hat = self._encode_once(x_pad, h, w, text, lam, seen)
            self._seen_images.put(key, seen)
            if reconstruct:
                t1 = time.perf_counter()
                import torch

                model = self._model(self._variant(lam))
                with torch.inference_mode():
                    x_hat = model.synthesize(y_hat, self._rate_arg(lam))
                recon = _to_uint8(x_hat[0, :, :h, :w].cpu())
                return Encoded(data, h, w, lam, (t1 - t0) * 1e3, recon,
                               (time.perf_counter() - t1) * 1e3)
        return Encoded(data, h, w, lam, (time.perf_counter() - t0) * 1e3)

    def verify(self, data: bytes) -> None:
        """Entropy-decode ``data`` and check its symbols against the encoder's (no synthesis).

        Raises `BitstreamError` exactly where :meth:`decompress` would; when it returns, the
        decoder's ŷ is the encoder's, so the image of ``encode(..., reconstruct=True)`` is the one
        decoding gives here.
        """
        self._decode_latent(*self._unpack_own(data))

    def forget_images(self) -> None:
        """Drop the kept latents and files (benchmarks that time a search from scratch)."""
        self._seen_images.clear()

    def _search_bpp(self, x_pad, h, w, text, target: float, seen: rate_search.SeenImage | None = None
                    ) -> tuple[bytes, float]:
        """A file whose real bpp is close to ``target``, and its λ.

        A fixed-rate ladder: every rung is encoded (files of this image already made are reused)
        and the closest kept. A continuous range: :mod:`app.codecs.rate_search` — from this
        image's earlier files when there are any, else from the entropy model's bit estimate
        (`ELIC.estimate_bits`); the analysis transform runs at most once. Below the range's
        smallest rate or above its largest, the end of the range is returned.
        """
        import torch

        files: dict[float, bytes] = dict(seen.files) if seen is not None else {}
        if self.rate_ladder is not None:
            for lam in self.rate_ladder:
                if lam not in files:
                    files[lam] = self._encode_once(x_pad, h, w, text, lam)[0]
            best = min(self.rate_ladder, key=lambda lam: abs(bpp(files[lam], h, w) - target))
            return files[best], best
        assert self.rate_range is not None
        variant = self._variants[0]
        model = self._model(variant)
        pixels = float(h * w)
        with torch.inference_mode():
            y0 = seen.latent if seen is not None and seen.latent is not None else None

            def latent():
                nonlocal y0
                if y0 is None:
                    y0 = model.analysis(x_pad, text)
                return y0

            def estimate(log_lam: float) -> float:
                lam = self.resolve_lmbda(math.exp(log_lam))
                bits = float(model.estimate_bits(model.scale_latent(latent(), lam))[0])
                return math.log(max(bits, 1.0) / pixels)

            def real(log_lam: float) -> float:
                lam = self.resolve_lmbda(math.exp(log_lam))
                if lam not in files:
                    out = model.compress_latent(model.scale_latent(latent(), lam),
                                                coding=self.coding)
                    files[lam] = self._pack(variant, out, lam, h, w)
                return math.log(bpp(files[lam], h, w))

            goal = math.log(target)
            lo, hi = (math.log(v) for v in self.rate_range)
            if files:
                known = [(math.log(lam), math.log(bpp(f, h, w))) for lam, f in files.items()]
                rate_search.from_known(goal, lo, hi, known, real)
            else:
                rate_search.from_estimate(goal, lo, hi, estimate, real)
        best = min(files, key=lambda lam: abs(bpp(files[lam], h, w) - target))
        return files[best], best

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
        return Image.fromarray(_to_uint8(self._decode_tensor(header, strings)), "RGB")

    def _decode_tensor(self, header: bitstream.Header, strings: list[bytes]):
        """Validate the header against this codec and run the decoder: (3, H, W) float."""
        import torch

        model, y_hat, lam = self._decode_latent(header, strings)
        with torch.inference_mode():
            x_hat = model.synthesize(y_hat, self._rate_arg(lam))
        return x_hat[0, :, : header.height, : header.width].cpu()

    def _decode_latent(self, header: bitstream.Header, strings: list[bytes]):
        """Validate the header against this codec and entropy-decode: (model, ŷ, λ)."""
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
        check_decode_size(header, strings, self.max_pixels)
        model = self._model(variant)
        ph, pw = padded(header.height), padded(header.width)
        shape = (ph // 64, pw // 64)
        n_y = int(self.cfg.get("M", 320)) * (ph // 16) * (pw // 16)
        n_z = int(self.cfg.get("N", 192)) * (ph // 64) * (pw // 64)
        y_string, z_string = rans_guard(strings[0], n_y), rans_guard(strings[1], n_z)
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
                out = model.decode_latent([[y_string], [z_string]], shape, coding=header.coding)
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
        return model, out["y_hat"], lam


def _to_uint8(x_hat) -> np.ndarray:
    """A decoder's (3, H, W) float output as the (H, W, 3) uint8 image a user gets."""
    import torch

    arr = (x_hat.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(arr)


