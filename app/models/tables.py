"""Entropy-coder tables of a model (quantised CDFs for y's Gaussian model and z's factorized one).

Two ways to get them, one per coding path:

* :func:`float_tables` reads what CompressAI's ``update(force=True)`` left in the model's buffers:
  float32 arithmetic (``erfc``, ``softplus``, ``tanh``, a small matmul), as the official code does.
  Needed to reproduce the official bitstreams, but vectorised float32 kernels differ in the last
  bit between instruction sets, and one ULP of a probability can move a quantised CDF entry.
* :func:`portable_tables` derives the same tables in float64 from the float32 parameters. The CDF
  entries are 16-bit integers ``round(p · 2^16)``: a float64 rounding difference (~1e-16 relative)
  changes one only when a value lies within ~1e-16 of a rounding boundary, so two machines agree
  unless an astronomically unlikely coincidence occurs — and then the file's tables checksum says so
  before anything is decoded (:attr:`CodingTables.crc`).

Both return a :class:`CodingTables`; the coder (:mod:`app.models.elic`) uses nothing else.
"""

from __future__ import annotations

import copy
import math
import struct
import zlib
from dataclasses import dataclass

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.entropy_models.entropy_models import pmf_to_quantized_cdf
from torch import Tensor

__all__ = ["CodingTables", "float_tables", "portable_scale_table", "portable_tables"]

#: CompressAI's default scale table: 64 log-spaced standard deviations from 0.11 to 256.
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64
#: Probability mass left outside the Gaussian tables (CompressAI's default ``tail_mass``).
TAIL_MASS = 1e-9
PRECISION = 16


@dataclass(frozen=True)
class CodingTables:
    """Everything the rANS coder reads besides the symbols: CDFs, lengths, offsets, bounds."""

    scale_table: Tensor  # (L,) float32: upper bounds of the scale bins, for index building
    scale_bound: float  # lower bound applied to predicted scales
    y_cdf: list[list[int]]
    y_lengths: list[int]
    y_offsets: list[int]
    z_cdf: list[list[int]]
    z_lengths: list[int]
    z_offsets: list[int]
    z_medians: Tensor  # (C,) float32

    @property
    def crc(self) -> int:
        """CRC-32 of every table entry: equal on two machines iff they code identically."""
        crc = zlib.crc32(self.scale_table.to(torch.float32).numpy().astype("<f4").tobytes())
        crc = zlib.crc32(struct.pack("<d", self.scale_bound), crc)
        for rows in (self.y_cdf, self.z_cdf):
            for row in rows:
                crc = zlib.crc32(struct.pack(f"<{len(row)}i", *row), crc)
        for ints in (self.y_lengths, self.y_offsets, self.z_lengths, self.z_offsets):
            crc = zlib.crc32(struct.pack(f"<{len(ints)}i", *ints), crc)
        return zlib.crc32(self.z_medians.to(torch.float32).numpy().astype("<f4").tobytes(), crc)


def _cdf_rows(cdf: Tensor, lengths: Tensor) -> list[list[int]]:
    return [row[: int(n)].tolist() for row, n in zip(cdf, lengths.reshape(-1), strict=True)]


def float_tables(gc: GaussianConditional, eb: EntropyBottleneck) -> CodingTables:
    """The tables CompressAI's ``update(force=True)`` computed (the official coding path)."""
    if gc.quantized_cdf.numel() == 0 or eb.quantized_cdf.numel() == 0:
        raise RuntimeError("entropy coder tables are empty: call model.update(force=True) first")
    return CodingTables(
        scale_table=gc.scale_table.detach().float().cpu(),
        scale_bound=float(gc.lower_bound_scale.bound.item()),
        y_cdf=_cdf_rows(gc.quantized_cdf.cpu(), gc.cdf_length.cpu()),
        y_lengths=gc.cdf_length.reshape(-1).int().tolist(),
        y_offsets=gc.offset.reshape(-1).int().tolist(),
        z_cdf=_cdf_rows(eb.quantized_cdf.cpu(), eb.cdf_length.cpu()),
        z_lengths=eb.cdf_length.reshape(-1).int().tolist(),
        z_offsets=eb.offset.reshape(-1).int().tolist(),
        z_medians=eb._get_medians().detach().reshape(-1).float().cpu(),
    )


def portable_scale_table() -> Tensor:
    """The 64 scale bins as float32, from correctly rounded float64 ``log``/``exp`` of Python."""
    lo, hi = math.log(SCALES_MIN), math.log(SCALES_MAX)
    step = (hi - lo) / (SCALES_LEVELS - 1)
    values = [math.exp(lo + i * step) for i in range(SCALES_LEVELS)]
    values[-1] = SCALES_MAX
    return torch.tensor(values, dtype=torch.float64).to(torch.float32)


def _quantise(pmf: Tensor, tail: Tensor, lengths: Tensor) -> list[list[int]]:
    rows = []
    for p, t, n in zip(pmf, tail, lengths.tolist(), strict=True):
        prob = torch.cat((p[: int(n)], t.reshape(1)))
        rows.append(pmf_to_quantized_cdf(prob, PRECISION).tolist())
    return rows


def _gaussian_tables(scales: Tensor) -> tuple[list[list[int]], list[int], list[int]]:
    """Quantised CDFs of a zero-mean Gaussian per scale bin, in float64 (CompressAI's recipe)."""
    multiplier = -float(torch.special.ndtri(torch.tensor(TAIL_MASS / 2, dtype=torch.float64)))
    s = scales.to(torch.float64)
    center = torch.ceil(s * multiplier).to(torch.int64)
    length = 2 * center + 1
    samples = (torch.arange(int(length.max())).view(1, -1) - center.view(-1, 1)).abs()
    samples = samples.to(torch.float64)
    const = -(2.0**-0.5)
    upper = 0.5 * torch.special.erfc(const * (0.5 - samples) / s.view(-1, 1))
    lower = 0.5 * torch.special.erfc(const * (-0.5 - samples) / s.view(-1, 1))
    pmf = upper - lower
    tail = 2 * lower[:, 0]
    cdf = _quantise(pmf, tail, length)
    return cdf, (length + 2).tolist(), (-center).tolist()


def _factorized_tables(eb: EntropyBottleneck) -> tuple[list[list[int]], list[int], list[int]]:
    """``EntropyBottleneck.update`` recomputed on a float64 copy of the density model."""
    eb64 = copy.deepcopy(eb).to("cpu", torch.float64)
    q = eb64.quantiles.detach()[:, 0, :]
    medians = q[:, 1]
    minima = torch.ceil(medians - q[:, 0]).clamp(min=0).to(torch.int64)
    maxima = torch.ceil(q[:, 2] - medians).clamp(min=0).to(torch.int64)
    start = medians - minima
    length = maxima + minima + 1
    samples = torch.arange(int(length.max()), dtype=torch.float64).view(1, 1, -1)
    samples = samples + start.view(-1, 1, 1)
    with torch.no_grad():
        pmf, lower, upper = eb64._likelihood(samples, stop_gradient=True)
    pmf = pmf[:, 0, :]
    tail = torch.sigmoid(lower[:, 0, 0]) + torch.sigmoid(-upper[:, 0, -1])
    cdf = _quantise(pmf, tail, length)
    return cdf, (length + 2).tolist(), (-minima).tolist()


def portable_tables(gc: GaussianConditional, eb: EntropyBottleneck) -> CodingTables:
    """Tables for the portable coding path, computed in float64 (see the module docstring)."""
    scales = portable_scale_table()
    y_cdf, y_lengths, y_offsets = _gaussian_tables(scales)
    z_cdf, z_lengths, z_offsets = _factorized_tables(eb)
    return CodingTables(
        scale_table=scales,
        scale_bound=float(gc.lower_bound_scale.bound.item()),
        y_cdf=y_cdf,
        y_lengths=y_lengths,
        y_offsets=y_offsets,
        z_cdf=z_cdf,
        z_lengths=z_lengths,
        z_offsets=z_offsets,
        z_medians=eb._get_medians().detach().reshape(-1).float().cpu(),
    )
