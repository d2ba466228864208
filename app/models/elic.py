"""ELIC in the JiangWeibeta ``9f0d716`` / TACO layout, as a CompressAI ``CompressionModel``.

Clean-room implementation of the official checkpoints' layout (no official code copied).
Attribute names follow the official state_dict: ``g_a.analysis_transform.i``,
``g_s.synthesis_transform.i``, ``h_a.reduction``, ``h_s.increase``, ``local_context``,
``channel_context`` (index 0 a parameter-less placeholder, inner ``fushion``),
``entropy_parameters_{anchor,nonanchor}.k.fusion``, ``gaussian_conditional``, ``entropy_bottleneck``.

Widths come from a config dict (see :mod:`app.models.config`), so the same class builds the official
N192/M320 model and the small CPU-trainable variants. With ``variable_rate`` the model also owns
``gain`` / ``inv_gain`` tables of shape (L, M) (see :mod:`app.models.gain`); official configs have
no such keys.

Coding (batch of any size, one y stream and one z stream per image): per slice 0..K-1, the anchor
half then the non-anchor half, each squeezed to (C, H, W/2) and flattened in C order, all into one
rANS stream (CompressAI's ``BufferedRansEncoder`` / ``RansDecoder``); z is coded per channel as
``EntropyBottleneck.compress`` does. No per-symbol Python loops. Two coding paths share that
layout and differ only in the arithmetic of the entropy parameters: ``"portable"`` (default; exact,
:mod:`app.models.exact`, identical on every machine) and ``"float"`` (the official float32
arithmetic, which reproduces the official bitstreams on the CPU class that made them).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import AttentionBlock
from compressai.models import CompressionModel
from torch import Tensor, nn

from app.errors import BitstreamError, ConfigError
from app.models.adapter import Extractor, Injector
from app.models.config import validate_config
from app.models.exact import ExactEntropyModel
from app.models.gain import initial_gains, interpolate_gain
from app.models.layers import (
    ANCHOR,
    NONANCHOR,
    ChannelContext,
    EntropyParameters,
    ResidualBottleneck,
    checkerboard_mask,
    conv,
    deconv,
    squeeze_half,
    unsqueeze_half,
)
from app.models.tables import CodingTables, float_tables, portable_tables

__all__ = [
    "CODINGS",
    "CODING_THREADS",
    "ELIC",
    "FLOAT",
    "PORTABLE",
    "AnalysisTransform",
    "SynthesisTransform",
    "coding_threads",
    "symbols_crc",
]

#: Coding paths: exact integer entropy model (default) / official float32 arithmetic.
PORTABLE = "portable"
FLOAT = "float"
CODINGS = (PORTABLE, FLOAT)

#: Intra-op threads of the *float* coding path for every computation the decoder must reproduce
#: (h_s, the context models and the parameter aggregation). oneDNN's conv results depend on the
#: thread count (measured: 1 and 16 threads differ by ULPs from 2..8, enough to flip a scale
#: index), so that path pins one count; it still differs between instruction sets, which is why
#: the portable path exists. 2 reproduces the official fixture on its recording CPU.
CODING_THREADS = 2
_THREAD_LOCK = threading.RLock()


@contextmanager
def coding_threads(count: int | None = None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count or CODING_THREADS)``, then restore.

    The thread count is process-wide, so a lock keeps two coding blocks (e.g. UI requests in
    different threads) from changing it under each other. Changing ``CODING_THREADS`` changes
    the numerics: a stream must be decoded with the value it was encoded with.
    """
    count = count or CODING_THREADS
    with _THREAD_LOCK:
        before = torch.get_num_threads()
        if before != count:
            torch.set_num_threads(count)
        try:
            yield
        finally:
            if before != count:
                torch.set_num_threads(before)


class AnalysisTransform(nn.Module):
    """``g_a``: a Sequential ``analysis_transform`` that routes text to adapter blocks, if any.

    Injectors get the current text; an Extractor replaces the current text by its output, so with
    TACO's order (Injector, …, Extractor, Injector) the first Injector sees the original text and
    the second the updated one.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.analysis_transform = nn.Sequential(*layers)

    def forward(
        self, x: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None
    ) -> Tensor:
        current = text
        for layer in self.analysis_transform:
            if isinstance(layer, Extractor):
                current = layer(x, current, text_mask)
            elif isinstance(layer, Injector):
                x = layer(x, current, text_mask)
            else:
                x = layer(x)
        return x


class SynthesisTransform(nn.Module):
    """``g_s``: AttnBlock(M), deconv, 3 RB, deconv, AttnBlock(N), 3 RB, deconv, 3 RB, deconv N→3."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.synthesis_transform = nn.Sequential(
            AttentionBlock(m),
            deconv(m, n),
            *[ResidualBottleneck(n) for _ in range(3)],
            deconv(n, n),
            AttentionBlock(n),
            *[ResidualBottleneck(n) for _ in range(3)],
            deconv(n, n),
            *[ResidualBottleneck(n) for _ in range(3)],
            deconv(n, 3),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.synthesis_transform(x)


class HyperAnalysis(nn.Module):
    """``h_a.reduction``: conv3×3 s1 M→N, ReLU, conv5×5 s2, ReLU, conv5×5 s2."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.reduction = nn.Sequential(
            conv(m, n, 3, 1),
            nn.ReLU(inplace=True),
            conv(n, n, 5, 2),
            nn.ReLU(inplace=True),
            conv(n, n, 5, 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.reduction(x)


class HyperSynthesis(nn.Module):
    """``h_s.increase``: deconv5×5 s2 N→M, ReLU, deconv5×5 s2 M→3M/2, ReLU, deconv3×3 s1 → hyper_out."""

    def __init__(self, n: int, m: int, out: int) -> None:
        super().__init__()
        mid = m * 3 // 2
        self.increase = nn.Sequential(
            deconv(n, m, 5, 2),
            nn.ReLU(inplace=True),
            deconv(m, mid, 5, 2),
            nn.ReLU(inplace=True),
            deconv(mid, out, 3, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.increase(x)


def _ste_round(x: Tensor) -> Tensor:
    """Rounding with a straight-through gradient (value identical to ``torch.round``)."""
    if x.requires_grad:
        return (torch.round(x) - x).detach() + x
    return torch.round(x)


class ELIC(CompressionModel):
    """ELIC (He et al. 2022) in the official TACO layout; also the base class of :class:`TACO`.

    Args:
        cfg: model config dict (validated here; see ``app/configs/*.json``).
    """

    #: Whether the encoder consumes text token states.
    uses_text = False

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        cfg = validate_config(cfg)
        self.cfg: dict[str, Any] = cfg
        n, m = cfg["N"], cfg["M"]
        self.N, self.M = n, m
        self.slices: list[int] = list(cfg["slices"])
        self.hyper_out: int = cfg["hyper_out"]
        self.variable_rate: bool = cfg["variable_rate"]
        #: Where the weights came from (set by the loaders); None means random initialisation.
        self.weights_source: str | None = None
        #: Training speed-up: when set (e.g. ``torch.bfloat16``) and in training mode, g_a, h_a,
        #: h_s and g_s run under ``torch.autocast``; the context models, the entropy models and
        #: every eval / coding path stay fp32.
        self.transform_dtype: torch.dtype | None = None

        if not self.uses_text:
            # JiangWeibeta ELIC registers its bottleneck first (state_dict order of its checkpoints).
            self.entropy_bottleneck = EntropyBottleneck(n)
        if self.variable_rate:
            ladder = cfg["lmbda_ladder"]
            gain, inv_gain = initial_gains(ladder, m)
            self.gain = nn.Parameter(gain)
            self.inv_gain = nn.Parameter(inv_gain)
            self.register_buffer(
                "_log_ladder", torch.tensor(ladder, dtype=torch.float64).log(), persistent=False
            )

        self.g_a = AnalysisTransform(self._analysis_layers())
        self.g_s = SynthesisTransform(n, m)
        self.h_a = HyperAnalysis(n, m)
        self.h_s = HyperSynthesis(n, m, self.hyper_out)

        hidden = cfg["ctx_hidden"]
        self.local_context = nn.ModuleList(conv(c, 2 * c, 5, 1) for c in self.slices)
        self.channel_context = nn.ModuleList(
            [nn.Identity()]  # placeholder: slice 0 has no channel context
            + [
                ChannelContext(sum(self.slices[:i]), 2 * c, hidden)
                for i, c in enumerate(self.slices)
                if i > 0
            ]
        )
        self.entropy_parameters_anchor = nn.ModuleList(
            EntropyParameters(self.hyper_out + (2 * c if i else 0), 2 * c)
            for i, c in enumerate(self.slices)
        )
        self.entropy_parameters_nonanchor = nn.ModuleList(
            EntropyParameters(self.hyper_out + (4 * c if i else 2 * c), 2 * c)
            for i, c in enumerate(self.slices)
        )
        self.gaussian_conditional = GaussianConditional(None)
        if self.uses_text:
            self.entropy_bottleneck = EntropyBottleneck(n)  # TACO registers it last

    # ------------------------------------------------------------------ construction
    def _trunk(self) -> list[nn.Module]:
        """The 15 text-free g_a layers (ELIC indices 0..14)."""
        n, m = self.N, self.M
        return [
            conv(3, n),
            *[ResidualBottleneck(n) for _ in range(3)],
            conv(n, n),
            *[ResidualBottleneck(n) for _ in range(3)],
            AttentionBlock(n),
            conv(n, n),
            *[ResidualBottleneck(n) for _ in range(3)],
            conv(n, m),
            AttentionBlock(m),
        ]

    def _analysis_layers(self) -> list[nn.Module]:
        return self._trunk()

    # ------------------------------------------------------------------ rate control
    @property
    def default_lmbda(self) -> float | None:
        """λ used when ``lmbda=None``: geometric middle of ``lmbda_range`` (variable rate) or None."""
        if not self.variable_rate:
            return None
        lo, hi = self.cfg["lmbda_range"]
        return float((lo * hi) ** 0.5)

    def _gains(self, lmbda: float | Tensor | None, batch: int) -> tuple[Tensor, Tensor] | None:
        """(gain, inv_gain), each (1 or B, M, 1, 1), for ``lmbda``; None for a fixed-rate model."""
        if not self.variable_rate:
            return None
        if lmbda is None:
            lmbda = self.default_lmbda
        lam = torch.as_tensor(lmbda, dtype=torch.float64, device=self.gain.device).reshape(-1)
        if lam.numel() not in (1, batch):
            raise ValueError(f"lmbda must be a scalar or have {batch} entries, got {lam.numel()}")
        lo, hi = self.cfg["lmbda_range"]
        if bool(((lam < lo * (1 - 1e-6)) | (lam > hi * (1 + 1e-6))).any()):
            raise ConfigError(
                f"lambda {lam.tolist()} is outside the range [{lo:g}, {hi:g}] of {self.cfg['name']}"
            )
        gain = interpolate_gain(self.gain, self._log_ladder, lam)
        inv_gain = interpolate_gain(self.inv_gain, self._log_ladder, lam)
        return gain[:, :, None, None], inv_gain[:, :, None, None]

    # ------------------------------------------------------------------ shared pieces
    def _transform_autocast(self, x: Tensor) -> Any:
        if self.training and self.transform_dtype is not None:
            return torch.autocast(device_type=x.device.type, dtype=self.transform_dtype)
        return nullcontext()

    def _analysis(self, x: Tensor, text: Tensor | None, text_mask: Tensor | None) -> Tensor:
        """Run g_a; ELIC ignores text."""
        return self.g_a(x)

    def _z_medians(self) -> Tensor:
        return self.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)

    def _encode_latent(
        self, x: Tensor, text: Tensor | None, lmbda: float | Tensor | None, text_mask: Tensor | None,
        apply_gain: bool = True,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % 64 or x.shape[-1] % 64:
            raise ValueError(f"H and W must be multiples of 64, got {tuple(x.shape[-2:])}")
        y = self._analysis(x, text, text_mask)
        if not apply_gain:
            return y, None
        gains = self._gains(lmbda, x.shape[0])
        if gains is not None:
            y = y * gains[0]
        return y, gains

    def _synthesis(self, y_hat: Tensor, gains: tuple[Tensor, Tensor] | None) -> Tensor:
        if gains is not None:
            y_hat = y_hat * gains[1]
        return self.g_s(y_hat)

    def _anchor_params(
        self, index: int, ctx: Tensor | None, hyper: Tensor
    ) -> tuple[Tensor, Tensor]:
        inp = hyper if ctx is None else torch.cat([ctx, hyper], dim=1)
        scales, means = self.entropy_parameters_anchor[index](inp).chunk(2, 1)
        return scales, means

    def _nonanchor_params(
        self, index: int, local: Tensor, ctx: Tensor | None, hyper: Tensor
    ) -> tuple[Tensor, Tensor]:
        parts = [local, hyper] if ctx is None else [local, ctx, hyper]
        scales, means = self.entropy_parameters_nonanchor[index](torch.cat(parts, dim=1)).chunk(
            2, 1
        )
        return scales, means

    def _channel_ctx(self, index: int, decoded: list[Tensor]) -> Tensor | None:
        if index == 0:
            return None
        return self.channel_context[index](torch.cat(decoded, dim=1))

    # ------------------------------------------------------------------ training / eval forward
    def forward(
        self,
        x: Tensor,
        text: Tensor | None = None,
        lmbda: float | Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> dict[str, Any]:
        """Noise-relaxed likelihoods and straight-through reconstruction (official "mixed" mode).

        ŷ = round(y − μ) + μ and ẑ = round(z − median) + median (straight-through gradients); the
        likelihoods use additive uniform noise in training mode and the rounded values in eval
        mode. ``lmbda`` may be a float or a (B,) tensor (per-sample rate, variable-rate models).
        """
        with self._transform_autocast(x):
            y, gains = self._encode_latent(x, text, lmbda, text_mask)
            y = y.float()
        y_hat, y_likelihoods, z_likelihoods = self._entropy_forward(y)
        with self._transform_autocast(x):
            x_hat = self._synthesis(y_hat, gains).float()
        return {
            "x_hat": x_hat,
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
        }

    def _entropy_forward(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The hyperprior and context models on ``y``: (ŷ, y likelihoods, z likelihoods)."""
        with self._transform_autocast(y):
            z = self.h_a(y).float()
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self._z_medians()
        # Every conv input of the entropy path is made contiguous, here as in compress/decompress:
        # g_a (TACO's Injector) may hand over a channels-last y, and a different memory format
        # can change conv results by an ULP, which must never differ between encoder and decoder.
        z_hat = (_ste_round(z - medians) + medians).contiguous()
        # In eval mode the entropy path runs under the coding threads, so that eval forward and a
        # float-path decompress give bit-identical reconstructions (the portable path differs from
        # it in the last bits of the means); training keeps the caller's threads.
        pinned = coding_threads() if not self.training else nullcontext()
        with pinned:
            with self._transform_autocast(y):
                hyper = self.h_s(z_hat).float()

            height, width = y.shape[-2:]
            anchor = checkerboard_mask(height, width, ANCHOR, y.device)
            y_hat_slices: list[Tensor] = []
            likelihoods: list[Tensor] = []
            for i, y_slice in enumerate(y.split(self.slices, dim=1)):
                ctx = self._channel_ctx(i, y_hat_slices)
                scales_a, means_a = self._anchor_params(i, ctx, hyper)
                anchor_hat = torch.where(
                    anchor, _ste_round(y_slice - means_a) + means_a, 0.0
                ).contiguous()
                local = self.local_context[i](anchor_hat)
                scales_n, means_n = self._nonanchor_params(i, local, ctx, hyper)
                scales = torch.where(anchor, scales_a, scales_n)
                means = torch.where(anchor, means_a, means_n)
                _, slice_likelihoods = self.gaussian_conditional(y_slice, scales, means)
                likelihoods.append(slice_likelihoods)
                y_hat_slices.append((_ste_round(y_slice - means) + means).contiguous())

        return torch.cat(y_hat_slices, dim=1), torch.cat(likelihoods, dim=1), z_likelihoods

    @torch.no_grad()
    def estimate_bits(self, y: Tensor) -> Tensor:
        """(B,) bits the entropy model assigns to a latent ``y`` (gains applied), without coding it.

        Eval-mode likelihoods of the rounded latents, in float arithmetic: within about 1 % of the
        real file sizes (the coder's table quantisation and its per-stream overhead make up the
        rest), at a fraction of an encode's cost. A bpp search uses it to pick λ before encoding.
        """
        _, y_lk, z_lk = self._entropy_forward(y.float())
        return -(torch.log2(y_lk).flatten(1).sum(1) + torch.log2(z_lk).flatten(1).sum(1))

    def analysis(self, x: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None
                 ) -> Tensor:
        """g_a's latent before the rate gain (ELIC ignores ``text``); see :meth:`scale_latent`."""
        return self._encode_latent(x, text, None, text_mask, apply_gain=False)[0]

    def scale_latent(self, y: Tensor, lmbda: float | Tensor | None) -> Tensor:
        """``y`` of :meth:`analysis` times the gain of ``lmbda``: what :meth:`compress` codes."""
        gains = self._gains(lmbda, y.shape[0])
        return y * gains[0] if gains is not None else y

    # ------------------------------------------------------------------ real coding
    def update(self, scale_table: Tensor | None = None, force: bool = False,
               update_quantiles: bool = False) -> bool:
        """CompressAI's table update; also drops the cached portable coder (weights may differ)."""
        self._coders: dict[str, tuple[Any, CodingTables]] = {}
        return super().update(scale_table=scale_table, force=force,
                              update_quantiles=update_quantiles)

    def coder(self, coding: str = PORTABLE) -> tuple[Any, CodingTables]:
        """``(entropy parameter model, tables)`` of a coding path, built once per ``update()``.

        ``"portable"``: :class:`~app.models.exact.ExactEntropyModel` and float64-derived tables —
        the same numbers on every machine. ``"float"``: the float32 modules and CompressAI's
        tables, as the official code computes them (reproduces its bitstreams on the CPU class
        they were made on; elsewhere a stream may not decode, which the file's checks detect).
        """
        if coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
        cache: dict[str, tuple[Any, CodingTables]] = self.__dict__.setdefault("_coders", {})
        device = next(self.parameters()).device
        if coding in cache and getattr(cache[coding][0], "device", device) != device:
            del cache[coding]  # the model moved since the coder was built
        if coding not in cache:
            gc, eb = self.gaussian_conditional, self.entropy_bottleneck
            if gc.quantized_cdf.numel() == 0 or eb.quantized_cdf.numel() == 0:
                raise RuntimeError(
                    "entropy coder tables are empty: call model.update(force=True) first"
                )
            if coding == PORTABLE:
                cache[coding] = (ExactEntropyModel(self), portable_tables(gc, eb))
            else:
                cache[coding] = (_FloatEntropyModel(self), float_tables(gc, eb))
        return cache[coding]

    def _cdf_tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        tables = self.coder(FLOAT)[1]
        return tables.y_cdf, tables.y_lengths, tables.y_offsets

    @staticmethod
    def _build_indexes(scales: Tensor, tables: CodingTables) -> Tensor:
        """Same result as ``GaussianConditional.build_indexes`` (count of table entries below the
        bounded scale, capped at L-1), in one ``bucketize`` instead of a pass per table entry."""
        bounded = torch.clamp_min(scales, tables.scale_bound).contiguous()
        table = tables.scale_table[:-1].to(scales.device, scales.dtype).contiguous()
        return torch.bucketize(bounded, table).to(torch.int32)

    def _coding_path(self, z_hat: Tensor, code_half: Any, coding: str) -> Tensor:
        """h_s and the slice loop shared by compress and decompress.

        ``code_half(i, scales, means, parity)`` codes (or decodes) one checkerboard half of slice
        ``i`` and returns its ŷ with zeros at the other half. Returns ŷ (B, M, H, W). The float
        path pins the coding threads (its results depend on them); the portable one needs not.
        """
        params, _ = self.coder(coding)
        with params.context():
            hyper = params.hyper(z_hat)
            y_hat_slices: list[Tensor] = []
            for i in range(len(self.slices)):
                ctx = params.channel_ctx(i, y_hat_slices)
                scales_a, means_a = params.anchor(i, ctx, hyper)
                anchor_hat = code_half(i, scales_a, means_a, ANCHOR)
                local = params.local(i, anchor_hat)
                scales_n, means_n = params.nonanchor(i, local, ctx, hyper)
                y_hat_slices.append(anchor_hat + code_half(i, scales_n, means_n, NONANCHOR))
        return torch.cat(y_hat_slices, dim=1)

    @staticmethod
    def _z_indexes(shape: Sequence[int]) -> list[int]:
        c, h, w = (int(v) for v in shape)
        return torch.arange(c, dtype=torch.int32).repeat_interleave(h * w).tolist()

    @torch.no_grad()
    def compress(
        self,
        x: Tensor,
        text: Tensor | None = None,
        lmbda: float | Tensor | None = None,
        text_mask: Tensor | None = None,
        coding: str = PORTABLE,
    ) -> dict[str, Any]:
        """Encode ``x`` (B, 3, H, W) into ``{"strings": [[y_bytes…], [z_bytes…]], "shape": (zh, zw)}``.

        Per slice, the anchor half then the non-anchor half, squeezed to (C, H, W/2) and flattened
        in C order, all into one rANS stream per image; z as CompressAI's ``EntropyBottleneck``
        codes it. Also returns ``"symbols_crc"`` (per image, CRC-32 of the y then z symbols as
        little-endian int32 in coding order) and ``"tables_crc"`` (:attr:`CodingTables.crc`), which
        a decoder compares with its own to detect arithmetic it does not reproduce.
        """
        y, _ = self._encode_latent(x, text, lmbda, text_mask)
        return self.compress_latent(y, coding)

    @torch.no_grad()
    def compress_latent(self, y: Tensor, coding: str = PORTABLE) -> dict[str, Any]:
        """:meth:`compress` from the gain-scaled latent ``y`` (:meth:`scale_latent`)."""
        _, tables = self.coder(coding)
        z = self.h_a(y)
        medians = tables.z_medians.to(z.device).view(1, -1, 1, 1)
        z_sym = torch.round(z - medians)
        z_hat = (z_sym + medians).contiguous()
        batch = y.shape[0]
        z_indexes = self._z_indexes(z.shape[1:])
        z_symbols = [z_sym[b].reshape(-1).to(torch.int32) for b in range(batch)]
        z_strings = []
        for b in range(batch):
            encoder = RansEncoder()
            z_strings.append(encoder.encode_with_indexes(
                z_symbols[b].tolist(), z_indexes, tables.z_cdf, tables.z_lengths, tables.z_offsets
            ))

        y_slices = y.split(self.slices, dim=1)
        symbols: list[list[Tensor]] = [[] for _ in range(batch)]
        indexes: list[list[Tensor]] = [[] for _ in range(batch)]

        def code_half(i: int, scales: Tensor, means: Tensor, parity: int) -> Tensor:
            means_sq = squeeze_half(means, parity)
            q = torch.round(squeeze_half(y_slices[i], parity) - means_sq)
            idx = self._build_indexes(squeeze_half(scales, parity), tables)
            for b in range(batch):
                symbols[b].append(q[b].reshape(-1).to(torch.int32))
                indexes[b].append(idx[b].reshape(-1))
            return unsqueeze_half(q + means_sq, parity)

        self._coding_path(z_hat, code_half, coding)

        y_strings: list[bytes] = []
        crcs: list[int] = []
        for b in range(batch):
            y_sym = torch.cat(symbols[b])
            encoder = BufferedRansEncoder()
            encoder.encode_with_indexes(
                y_sym.tolist(), torch.cat(indexes[b]).tolist(),
                tables.y_cdf, tables.y_lengths, tables.y_offsets,
            )
            y_strings.append(encoder.flush())
            crcs.append(symbols_crc(y_sym, z_symbols[b]))
        return {
            "strings": [y_strings, z_strings],
            "shape": (int(z.shape[-2]), int(z.shape[-1])),
            "symbols_crc": crcs,
            "tables_crc": tables.crc,
        }

    @torch.no_grad()
    def decompress(
        self,
        strings: Sequence[Sequence[bytes]],
        shape: Sequence[int],
        lmbda: float | Tensor | None = None,
        coding: str = PORTABLE,
    ) -> dict[str, Any]:
        """Decode ``strings`` / ``shape`` from :meth:`compress` into ``{"x_hat"}`` (no text needed).

        ``lmbda`` must be the λ used at encoding time for variable-rate models (it only sets the
        inverse gain; the entropy decoding itself does not depend on it), ``coding`` the path it
        was encoded with. Also returns ``"symbols_crc"`` of the decoded symbols (see
        :meth:`compress`): a value different from the encoder's means the decoder lost sync.
        """
        if len(strings) != 2 or len(strings[0]) != len(strings[1]):
            raise ValueError("expected strings = [[y_bytes…], [z_bytes…]] of equal lengths")
        for stream in (*strings[0], *strings[1]):
            # CompressAI's rANS writes whole 32-bit words and an 8-byte final state; anything else
            # is corrupt, and its decoder would read past the end of the buffer.
            if len(stream) < 8 or len(stream) % 4:
                raise BitstreamError(f"corrupt entropy-coded stream ({len(stream)} bytes)")
        params, tables = self.coder(coding)
        device = next(self.parameters()).device
        zh, zw = (int(s) for s in shape)
        z_indexes = self._z_indexes((self.N, zh, zw))
        medians = tables.z_medians.to(device).view(1, -1, 1, 1)
        z_symbols = []
        for z_string in strings[1]:
            decoder = RansDecoder()
            values = decoder.decode_with_indexes(
                bytes(z_string), z_indexes, tables.z_cdf, tables.z_lengths, tables.z_offsets
            )
            z_symbols.append(torch.tensor(values, dtype=torch.int32))
        z_hat = torch.stack(z_symbols).reshape(-1, self.N, zh, zw).to(device).float() + medians
        z_hat = z_hat.contiguous()
        gains = self._gains(lmbda, z_hat.shape[0])

        decoders: list[RansDecoder] = []
        for y_string in strings[0]:
            decoder = RansDecoder()
            decoder.set_stream(bytes(y_string))
            decoders.append(decoder)
        y_symbols: list[list[Tensor]] = [[] for _ in decoders]

        def decode_half(i: int, scales: Tensor, means: Tensor, parity: int) -> Tensor:
            means_sq = squeeze_half(means, parity)
            idx = self._build_indexes(squeeze_half(scales, parity), tables)
            values = []
            for b, decoder in enumerate(decoders):
                sym = torch.tensor(
                    decoder.decode_stream(idx[b].reshape(-1).tolist(), tables.y_cdf,
                                          tables.y_lengths, tables.y_offsets),
                    dtype=torch.int32,
                )
                y_symbols[b].append(sym)
                values.append(sym.to(means_sq.dtype))
            q = torch.stack(values).reshape(means_sq.shape).to(means_sq.device)
            return unsqueeze_half(q + means_sq, parity)

        try:
            y_hat = self._coding_path(z_hat, decode_half, coding)
        except FloatingPointError as exc:
            raise BitstreamError(f"bitstream cannot be decoded: {exc}") from None
        crcs = [symbols_crc(torch.cat(ys), zs) for ys, zs in zip(y_symbols, z_symbols, strict=True)]
        return {"x_hat": self._synthesis(y_hat, gains), "symbols_crc": crcs}


class _FloatEntropyModel:
    """The float32 entropy-parameter path (the official arithmetic), under the coding threads."""

    def __init__(self, model: ELIC) -> None:
        self.model = model

    def context(self) -> Any:
        return coding_threads()

    def hyper(self, z_hat: Tensor) -> Tensor:
        return self.model.h_s(z_hat)

    def channel_ctx(self, index: int, decoded: list[Tensor]) -> Tensor | None:
        return self.model._channel_ctx(index, decoded)

    def anchor(self, index: int, ctx: Tensor | None, hyper: Tensor) -> tuple[Tensor, Tensor]:
        return self.model._anchor_params(index, ctx, hyper)

    def local(self, index: int, anchor_hat: Tensor) -> Tensor:
        return self.model.local_context[index](anchor_hat)

    def nonanchor(self, index: int, local: Tensor, ctx: Tensor | None, hyper: Tensor
                  ) -> tuple[Tensor, Tensor]:
        return self.model._nonanchor_params(index, local, ctx, hyper)


def symbols_crc(y_symbols: Tensor, z_symbols: Tensor) -> int:
    """CRC-32 of one image's quantised latents: y then z symbols, little-endian int32."""
    crc = zlib.crc32(y_symbols.to(torch.int32).cpu().numpy().astype("<i4").tobytes())
    return zlib.crc32(z_symbols.to(torch.int32).cpu().numpy().astype("<i4").tobytes(), crc)
