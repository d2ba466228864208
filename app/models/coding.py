"""Real entropy coding of an ELIC latent: the two coding paths, their coders, compress / decompress.

Coding (batch of any size, one y stream and one z stream per image): per slice 0..K-1, the anchor
half then the non-anchor half, each squeezed to (C, H, W/2) and flattened in C order, all into one
rANS stream (CompressAI's ``BufferedRansEncoder`` / ``RansDecoder``); z is coded per channel as
``EntropyBottleneck.compress`` does. No per-symbol Python loops. Two coding paths share that
layout and differ only in the arithmetic of the entropy parameters: ``"portable"`` (default; exact,
:mod:`app.models.exact`, identical on every machine) and ``"float"`` (the official float32
arithmetic, which reproduces the official bitstreams on the CPU class that made them).

:class:`RealCoding` holds the methods; :class:`app.models.elic.ELIC` inherits them.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from torch import Tensor, nn

from app.errors import BitstreamError
from app.models.exact import NARROW, WIDE, ExactEntropyModel
from app.models.layers import ANCHOR, NONANCHOR, squeeze_half, unsqueeze_half
from app.models.tables import CodingTables, float_tables, portable_tables

#: Coding paths: exact integer entropy model — narrow half-grid (default), wide half-grid or
#: wide full-grid (the arithmetics of earlier builds' files) — or official float32 arithmetic.
PORTABLE = "portable"
PORTABLE_WIDE = "portable-wide"
PORTABLE_FULL = "portable-full"
FLOAT = "float"
CODINGS = (PORTABLE, PORTABLE_WIDE, PORTABLE_FULL, FLOAT)
#: Exact paths: (half-grid, arithmetic).
_EXACT = {PORTABLE: (True, NARROW), PORTABLE_WIDE: (True, WIDE), PORTABLE_FULL: (False, WIDE)}

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


class RealCoding(CompressionModel):
    """Entropy coding of :class:`~app.models.elic.ELIC`, its subclass (which builds the layers)."""

    if TYPE_CHECKING:  # what ELIC defines and the coding uses
        N: int
        slices: list[int]
        h_a: nn.Module
        h_s: nn.Module
        local_context: nn.ModuleList
        gaussian_conditional: GaussianConditional
        entropy_bottleneck: EntropyBottleneck

        def _encode_latent(self, x: Tensor, text: Tensor | None, lmbda: float | Tensor | None,
                           text_mask: Tensor | None, apply_gain: bool = True
                           ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]: ...
        def _gains(self, lmbda: float | Tensor | None, batch: int
                   ) -> tuple[Tensor, Tensor] | None: ...
        def _synthesis(self, y_hat: Tensor, gains: tuple[Tensor, Tensor] | None) -> Tensor: ...
        def _channel_ctx(self, index: int, decoded: list[Tensor]) -> Tensor | None: ...
        def _anchor_params(self, index: int, ctx: Tensor | None, hyper: Tensor
                           ) -> tuple[Tensor, Tensor]: ...
        def _nonanchor_params(self, index: int, local: Tensor, ctx: Tensor | None, hyper: Tensor
                              ) -> tuple[Tensor, Tensor]: ...

    def update(self, scale_table: Tensor | None = None, force: bool = False,
               update_quantiles: bool = False) -> bool:
        """CompressAI's table update; also drops the cached portable coder (weights may differ)."""
        self._coders: dict[str, tuple[Any, CodingTables]] = {}
        return super().update(scale_table=scale_table, force=force,
                              update_quantiles=update_quantiles)

    def coder(self, coding: str = PORTABLE) -> tuple[Any, CodingTables]:
        """``(entropy parameter model, tables)`` of a coding path, built once per ``update()``.

        ``"portable"`` / ``"portable-wide"`` / ``"portable-full"``:
        :class:`~app.models.exact.ExactEntropyModel` (narrow half-grid / wide half-grid / wide
        full-grid) and float64-derived tables — the same numbers on every machine. ``"float"``: the float32 modules and CompressAI's
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
            if coding in _EXACT:
                half_grid, arithmetic = _EXACT[coding]
                cache[coding] = (ExactEntropyModel(self, half_grid, arithmetic),
                                 portable_tables(gc, eb))
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

        y_hat = self._coding_path(z_hat, code_half, coding)

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
            "y_hat": y_hat,
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
        out = self.decode_latent(strings, shape, coding)
        return {"x_hat": self.synthesize(out["y_hat"], lmbda), "symbols_crc": out["symbols_crc"]}

    @torch.no_grad()
    def synthesize(self, y_hat: Tensor, lmbda: float | Tensor | None = None) -> Tensor:
        """x̂ from a quantised latent ŷ (of :meth:`decode_latent` or :meth:`compress_latent`)."""
        # one memory layout whichever half produced ŷ, so g_s runs the same kernels on it
        return self._synthesis(y_hat.contiguous(), self._gains(lmbda, y_hat.shape[0]))

    @torch.no_grad()
    def decode_latent(
        self,
        strings: Sequence[Sequence[bytes]],
        shape: Sequence[int],
        coding: str = PORTABLE,
    ) -> dict[str, Any]:
        """The entropy-decoding half of :meth:`decompress`: ``{"y_hat", "symbols_crc"}``.

        ŷ is bit for bit the ``"y_hat"`` that :meth:`compress_latent` returned when the symbols
        checks agree (the same symbols plus the same exactly computed means).
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
        return {"y_hat": y_hat, "symbols_crc": crcs}


class _FloatEntropyModel:
    """The float32 entropy-parameter path (the official arithmetic), under the coding threads."""

    def __init__(self, model: RealCoding) -> None:
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
