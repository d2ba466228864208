"""Portable coding: exact arithmetic for every number the entropy decoder must reproduce.

The rANS decoder finds each symbol only if it is given exactly the scale index and mean the encoder
used. In ELIC those come from h_s, the channel and checkerboard context models and the parameter
aggregation — float32 convolutions whose last bits depend on the instruction set (AVX-512, AVX2,
SSE4.1, ARM), the BLAS / oneDNN kernel, the thread count and the device. One ULP in a mean or a
scale index desynchronises the decoder and the rest of the image turns to garbage. This module
runs those networks so that the result is the same on every IEEE-754 machine (post-training
integerisation in the spirit of He et al. 2022, arXiv 2202.07513; no retraining, no calibration
data):

Two integer arithmetics (:class:`Arithmetic`), chosen by the file's flags:

* **Narrow** (:data:`NARROW`, what every build writes now). *Weights* of every conv / transposed
  conv are quantised once, when the coder is built, per output channel to signed integers:
  ``step_c = max|w_c| / W``, ``w_int = round(w / step_c)`` — only a max, a division and a rounding
  of the stored float32 weights, all exact or correctly rounded IEEE operations, so every machine
  derives the same integers. The layer's largest per-channel L1 norm ``L1`` then fixes its *limb
  width* ``s``, the largest with ``2^s · L1 <= 2^24``. ``W`` is the largest of 511, 255, 127, 63
  (10 to 7 bits with the sign) that leaves ``s >= 9``: one limb, activation width ``T = min(s,
  23)``. Failing that, two limbs: the largest ``W`` that leaves ``2s >= 14`` (else 63), ``T = 2s``
  (and if even that is below 12, float64 sums with ``T = 14``). Weights give way first because
  activation bits matter more to the rate. *Activations* entering the conv are quantised per image
  with a power-of-two step from their exact maximum: ``e = frexp(max|a|).exponent``, ``a_int =
  round(a · 2^(T − e))``, so ``|a_int| <= 2^T``. The integer sums ``Σ a_int · w_int`` are computed
  exactly in whichever way is fastest: split into limbs ``a_int = hi · 2^s + lo`` (``0 <= lo <
  2^s``, ``|hi| <= 2^s``) where two are needed, each limb's sums stay at or below 2^24 in
  magnitude whatever the order, so a float32 convolution (oneDNN's direct kernels, any instruction
  set or thread count) adds them without rounding, and ``hi_sum · 2^s + lo_sum`` is exact in
  float64. 1×1 convs (no faster that way), a GPU (TF32, non-exact algorithms), oneDNN told to use
  reduced-precision float32, kernels a start-up probe finds inexact, or a batch large enough for
  NNPACK take the same integer sums in float64 — the same numbers, so the choice changes the
  speed, never a file.
* **Wide** (:data:`WIDE`, files of earlier builds): 16-bit weights (``max|w_c| / 32767``),
  24-bit activations (``T = 23``), the sums in float64: every product is below 2^15 · 2^23 and
  the weights' L1 norm is checked when the coder is built so that every partial sum stays below
  2^53.

Common to both:

* **Rescaling** ``acc · (step_c · 2^(e−T)) + bias_c`` (the bracket is exact: a power-of-two
  multiple), ReLU, concatenation and the final rounding to float32 are single IEEE operations in a
  fixed order, each correctly rounded (a multiply then an add, never a fused multiply-add):
  identical everywhere.
* **Speed** without touching the numbers: a stride-1 transposed conv runs as the equivalent regular
  conv (flipped kernel, swapped channels, padding k−1−p), and spatial convs use channels-last
  tensors. Both only change which exact integer sums are computed where, not their values; the
  golden files in tests/data/golden pin that files of earlier builds still decode.

What stays float: the analysis transforms g_a and h_a (encoder only — their result travels as
symbols, so two machines may write different files for one image, each of which decodes the same
everywhere) and the synthesis transform g_s (a last-bit difference moves a pixel by at most one
8-bit level after rounding; it never desynchronises anything). The rate–distortion cost of each
integerisation against the float path is measured in docs/RESULTS.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.errors import ConfigError
from app.models.layers import ANCHOR, NONANCHOR, squeeze_half, unsqueeze_half

__all__ = ["ACT_SHIFT", "NARROW", "WEIGHT_MAX", "WIDE", "Arithmetic", "ExactConv", "ExactEntropyModel", "float32_exact",
           "pow2", "quantise"]

#: Largest weight magnitude of the wide arithmetic: signed 16-bit.
WEIGHT_MAX = 2**15 - 1
#: Activation width of the wide arithmetic: ``|a_int| <= 2^ACT_SHIFT`` (signed 24-bit).
ACT_SHIFT = 23
#: float64 represents every integer below this exactly.
EXACT_LIMIT = 2**53
#: float32 represents every integer up to this exactly.
FLOAT32_LIMIT = 2**24
#: Narrow arithmetic: a layer gets one limb if some weight width leaves it this many activation
#: bits; otherwise two limbs with at least :data:`TWO_LIMB_SHIFT` bits (at least
#: :data:`MIN_TWO_LIMB_SHIFT` with the coarsest weights), else float64 sums with
#: :data:`TWO_LIMB_SHIFT` bits.
ONE_LIMB_SHIFT = 9
TWO_LIMB_SHIFT = 14
MIN_TWO_LIMB_SHIFT = 12
#: Weight magnitudes the narrow arithmetic tries, finest first (10 to 7 bits with the sign).
NARROW_WEIGHT_MAXES = (2**9 - 1, 2**8 - 1, 2**7 - 1, 2**6 - 1)
#: NNPACK (Winograd / FFT, not exact) may take float32 convs of this batch or more.
_NNPACK_BATCH = 16


@dataclass(frozen=True)
class Arithmetic:
    """An integer arithmetic of the entropy model (see the module docstring)."""

    name: str
    #: Largest weight magnitude (per output channel) and activation width ``T`` (``|a_int| <=
    #: 2^T``); None, None = both per layer from the float32 budget (:func:`_narrow_plan`).
    weight_max: int | None
    act_shift: int | None


#: 7..10-bit weights and 9..23-bit activations per layer, float32 limbs: what builds write now.
NARROW = Arithmetic("narrow", None, None)
#: 16-bit weights, 24-bit activations, float64 sums: files of earlier builds.
WIDE = Arithmetic("wide", WEIGHT_MAX, ACT_SHIFT)


def pow2(k: Tensor) -> Tensor:
    """Exactly ``2.0 ** k`` in float64 for integer ``k`` in [-1022, 1023], built from the bits.

    (``torch.pow`` / ``ldexp`` go through ``exp2``-style kernels that need not be exact.)
    """
    return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)


def quantise(x: Tensor, shift: int = ACT_SHIFT) -> tuple[Tensor, Tensor]:
    """Per-sample quantisation of ``x`` (B, ...) float64: ``(a_int, e)``, ``x ≈ a_int·2^(e−shift)``.

    ``e`` (B,) is the binary exponent of the sample's largest magnitude (0 for an all-zero sample),
    so ``|a_int| <= 2^shift``. Raises ``FloatingPointError`` on non-finite input.
    """
    # amax / amin over all non-batch dims at once: exact (a max does not round), and several
    # times faster than ``aminmax`` over ``flatten(1)``, which copies a channels-last tensor.
    if x.shape[0] == 1:  # one pass for both
        lo, hi = torch.aminmax(x)
        peak = torch.maximum(hi, lo.neg()).view(1)
    else:
        dims = tuple(range(1, x.dim()))
        peak = torch.maximum(x.amax(dim=dims), x.amin(dim=dims).neg_())
    if not bool(torch.isfinite(peak).all()):
        raise FloatingPointError("non-finite value in the entropy model")
    _, e = torch.frexp(peak)
    e = e.to(torch.int64)
    scale = pow2(shift - e).view(-1, *([1] * (x.dim() - 1)))
    return (x * scale).round_(), e


def _reduced_float32() -> bool:
    """Whether oneDNN was told to compute float32 in a reduced precision (bf16 / tf32)."""
    mkldnn = torch.backends.mkldnn
    for obj in (mkldnn, getattr(mkldnn, "conv", None), getattr(mkldnn, "matmul", None)):
        if getattr(obj, "fp32_precision", "none") not in ("none", "ieee"):
            return True
    return False


@functools.cache
def _float32_probe() -> bool:
    """Do this machine's float32 convs add integer products exactly? (Once per process.)

    Integer operands whose absolute sums come close to 2^24, through the kernels the narrow
    arithmetic uses (5×5 and 1×1 convs, a stride-2 transposed conv; channels-last); compared with
    float64. Winograd or FFT kernels, reduced-precision float32 or any other rounding shows.
    """
    gen = torch.Generator().manual_seed(0)
    cases = [((2, 64, 12, 12), (32, 64, 5, 5), 2**6, 2**7, False),
             ((2, 96, 8, 8), (48, 96, 1, 1), 2**8, 2**9, False),
             ((1, 64, 6, 6), (64, 32, 5, 5), 2**6, 2**7, True)]
    for xs, ws, xmax, wmax, transposed in cases:
        x = torch.randint(-xmax, xmax + 1, xs, generator=gen, dtype=torch.float64)
        w = torch.randint(-wmax, wmax + 1, ws, generator=gen, dtype=torch.float64)
        for fmt in (torch.contiguous_format, torch.channels_last):
            x32 = x.float().contiguous(memory_format=fmt)
            w32 = w.float().contiguous(memory_format=fmt)
            if transposed:
                got = F.conv_transpose2d(x32, w32, None, 2, 2, 1)
                ref = F.conv_transpose2d(x, w, None, 2, 2, 1)
            else:
                got = F.conv2d(x32, w32, None, 1, ws[-1] // 2)
                ref = F.conv2d(x, w, None, 1, ws[-1] // 2)
            if not torch.equal(got.double(), ref):
                return False
    return True


def float32_exact(device: torch.device) -> bool:
    """Whether float32 convs on ``device`` may carry the narrow arithmetic's limb sums.

    CPU only (GPU convs may use TF32 or non-exact algorithms), never with reduced-precision
    float32 switched on, and only if the probe found the kernels exact. Elsewhere the same sums
    are taken in float64: the choice changes the speed, never a number.
    """
    return device.type == "cpu" and not _reduced_float32() and _float32_probe()


def _largest_shift(l1: int) -> int:
    """The largest ``s`` with ``2^s · l1 <= 2^24`` (−1 if none)."""
    s = -1
    while l1 << (s + 1) <= FLOAT32_LIMIT:
        s += 1
    return s


def _quantise_weight(w: Tensor, peak: Tensor, reduce: tuple[int, ...], wmax: int
                     ) -> tuple[Tensor, Tensor, int]:
    """Per-output-channel integer weights ``|w_int| <= wmax``: ``(w_int, step, max L1 norm)``."""
    step = torch.where(peak > 0, peak / wmax, torch.ones_like(peak))
    w_int = torch.round(w / step).clamp(-wmax, wmax)
    return w_int, step, int(w_int.abs().sum(dim=reduce).max())


def _narrow_plan(w: Tensor, peak: Tensor, reduce: tuple[int, ...]
                 ) -> tuple[Tensor, Tensor, int, int, int, int]:
    """The narrow arithmetic's widths for one layer: ``(w_int, step, L1, T, limbs, s)``.

    One weight bit less is one activation bit more per limb, and activation bits matter more
    (measured: 8-bit weights with 16-bit activations cost nothing, 8 with 8 cost 0.6 % BD-rate),
    so the finest weights that still reach the activation target are taken.
    """
    # each width quantised once, whichever of the two searches below asks for it
    candidates = [(*q, _largest_shift(max(q[2], 1))) for q in
                  (_quantise_weight(w, peak, reduce, wmax) for wmax in NARROW_WEIGHT_MAXES)]
    for w_int, step, l1, s in candidates:  # one limb (half the float32 work of two)
        if s >= ONE_LIMB_SHIFT:
            return w_int, step, l1, min(s, 23), 1, 0
    # two limbs: the finest width that reaches the target, else the coarsest
    w_int, step, l1, s = next((c for c in candidates if 2 * c[3] >= TWO_LIMB_SHIFT),
                              candidates[-1])
    if 2 * s >= MIN_TWO_LIMB_SHIFT:
        return w_int, step, l1, min(2 * s, 23), 2, s
    return w_int, step, l1, TWO_LIMB_SHIFT, 0, 0  # too wide for float32 limbs: float64 sums


class ExactConv:
    """A ``Conv2d`` or ``ConvTranspose2d`` evaluated exactly (see the module docstring)."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d, device: torch.device,
                 arithmetic: Arithmetic = WIDE) -> None:
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        if layer.groups != 1 or tuple(layer.dilation) != (1, 1):
            raise ConfigError("exact coding supports plain convolutions only")
        w = layer.weight.detach().to("cpu", torch.float64)
        out_dim = 1 if self.transposed else 0
        reduce = tuple(d for d in range(4) if d != out_dim)
        peak = w.abs().amax(dim=reduce, keepdim=True)
        #: Limbs of the float32 evaluation: 0 = float64 only, 1, or 2 (``hi · 2^limb_shift + lo``).
        self.limbs = 0
        self.limb_shift = 0
        if arithmetic.weight_max is not None and arithmetic.act_shift is not None:
            w_int, step, l1 = _quantise_weight(w, peak, reduce, arithmetic.weight_max)
            self.act_shift = arithmetic.act_shift
        else:
            w_int, step, l1, self.act_shift, self.limbs, self.limb_shift = _narrow_plan(
                w, peak, reduce)
        if l1 * 2**self.act_shift >= EXACT_LIMIT:
            raise ConfigError(
                f"a {tuple(w.shape)} convolution is too wide for exact float64 accumulation"
            )
        self.stride: tuple[int, ...] = tuple(int(s) for s in layer.stride)
        self.padding: tuple[int, ...] = tuple(int(p) for p in layer.padding)
        self.output_padding: tuple[int, ...] = tuple(
            int(p) for p in getattr(layer, "output_padding", (0, 0)))
        if self.transposed and self.stride == (1, 1) and self.output_padding == (0, 0):
            # A stride-1 transposed conv is the regular conv with the flipped kernel, in and out
            # channels swapped and padding k-1-p: the same integer sums, about twice as fast.
            w_int = w_int.flip(2, 3).transpose(0, 1).contiguous()
            self.padding = tuple(k - 1 - p for k, p in zip(w.shape[2:], self.padding, strict=True))
            self.transposed = False
        self.kernel = tuple(int(k) for k in w_int.shape[2:])
        # Channels-last convs run faster on CPU (a layout only: the integer sums are exact
        # either way).
        self.channels_last = not self.transposed and self.kernel != (1, 1)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.weight = w_int.to(device).contiguous(memory_format=fmt)
        # 1×1 convs gain nothing from float32 on CPU (measured, one limb and two: as fast as the
        # float64 sums), so they keep those.
        self.weight32 = self.weight.float() if self.limbs and self.kernel != (1, 1) else None
        self.step = step.reshape(1, -1, 1, 1).to(device)
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[out_dim])
        self.bias = bias.to("cpu", torch.float64).reshape(1, -1, 1, 1).to(device)

    def _finish(self, acc: Tensor, e: Tensor) -> Tensor:
        # step_c · 2^(e-T) is exact (a power-of-two multiple), so one product rounds exactly as
        # the two would; a separate addition, never a fused multiply-add.
        scale = self.step * pow2(e - self.act_shift).view(-1, 1, 1, 1)
        return acc.mul_(scale).add_(self.bias)

    def _conv(self, a: Tensor, weight: Tensor, stride: Sequence[int], padding: Sequence[int]
              ) -> Tensor:
        if self.transposed:
            return F.conv_transpose2d(a, weight, None, stride, padding, self.output_padding)
        return F.conv2d(a, weight, None, stride, padding)

    def accumulate(self, a: Tensor, weight: Tensor | None = None, weight32: Tensor | None = None,
                   stride: Sequence[int] | None = None, padding: Sequence[int] | None = None
                   ) -> Tensor:
        """The exact integer sums of ``a`` (float64 integers, ``|a| <= 2^act_shift``) with the
        layer's weights (or the given ones, a subset of its taps), in float64."""
        weight = self.weight if weight is None else weight
        weight32 = self.weight32 if weight32 is None else weight32
        stride = self.stride if stride is None else stride
        padding = self.padding if padding is None else padding
        if (weight32 is None or a.shape[0] * self.limbs >= _NNPACK_BATCH
                or not float32_exact(a.device)):
            return self._conv(a, weight, stride, padding)
        a32 = a.float()  # exact: |a| <= 2^23; keeps the memory format
        if self.limbs == 1:
            return self._conv(a32, weight32, stride, padding).double()
        # Both limbs in one batch, split in float32, exactly: a power-of-two scaling, a floor,
        # and a difference of integers below 2^24.
        b = a.shape[0]
        unit = float(2**self.limb_shift)
        fmt = (torch.channels_last if a32.is_contiguous(memory_format=torch.channels_last)
               else torch.contiguous_format)
        limbs = torch.empty((2 * b, *a.shape[1:]), dtype=torch.float32, device=a.device,
                            memory_format=fmt)
        hi, lo = limbs[:b], limbs[b:]
        torch.mul(a32, 1.0 / unit, out=hi).floor_()
        torch.add(a32, hi, alpha=-unit, out=lo)  # 0 <= lo < 2^s
        acc = self._conv(limbs, weight32, stride, padding)
        # hi_sum · 2^s + lo_sum: integers below 2^53, exact however the add is carried out
        return acc[b:].double().add_(acc[:b], alpha=unit)

    def __call__(self, x: Tensor) -> Tensor:
        a, e = quantise(x, self.act_shift)
        if self.channels_last:
            a = a.contiguous(memory_format=torch.channels_last)
        return self._finish(self.accumulate(a), e)


class CheckerboardContext:
    """The checkerboard context conv, exactly, at the non-anchor positions only.

    Its input is zero at the non-anchor positions and only its non-anchor outputs are read, so
    each output sums only the taps at odd ``dr + dc``. On the squeezed halves (see
    :func:`~app.models.layers.squeeze_half`) that is, per output-row parity, a 5×3-tap conv of
    the squeezed anchors with row stride 2: the same integer products as the full conv at those
    positions (plus exact zeros), about 30 % of its work. Same weights, activation step and
    rescaling as :class:`ExactConv` of the layer, so the result equals ``squeeze_half(full
    exact conv, NONANCHOR)`` bit for bit.
    """

    def __init__(self, layer: nn.Conv2d, device: torch.device,
                 arithmetic: Arithmetic = WIDE) -> None:
        self.conv = ExactConv(layer, device, arithmetic)
        kh, kw = self.conv.kernel
        if (kh, kw) != (5, 5) or self.conv.padding != (2, 2) or self.conv.stride != (1, 1):
            self.kernels: list[Tensor] | None = None  # other shapes: full conv, then squeeze
            return
        w = self.conv.weight.contiguous()
        self.kernels = []
        self.kernels32: list[Tensor | None] = []
        for rho in (0, 1):  # output row parity; the non-anchor column is 2j + rho
            k = w.new_zeros((*w.shape[:2], 5, 3))
            for dr in range(-2, 3):
                for dc in range(-2, 3):
                    if (dr + dc) % 2 == 0:
                        continue  # lands on a non-anchor input: zero
                    s = (rho + dc - 1 + (rho + dr) % 2) // 2
                    k[:, :, dr + 2, s + 1] = w[:, :, dr + 2, dc + 2]
            self.kernels.append(k.contiguous(memory_format=torch.channels_last))
            # a subset of the layer's taps: its L1 norms, and so the limb bound, can only shrink
            self.kernels32.append(None if self.conv.weight32 is None else self.kernels[-1].float())

    def __call__(self, anchor_hat: Tensor) -> Tensor:
        """``anchor_hat`` (B, C, H, W), zero off the anchors -> non-anchor outputs (B, C', H, W/2)."""
        if self.kernels is None or NONANCHOR != 0:
            return squeeze_half(self.conv(anchor_hat), NONANCHOR)
        # max|x| over the anchors equals max|x| over the full tensor (the rest is zeros).
        a, e = quantise(squeeze_half(anchor_hat, ANCHOR), self.conv.act_shift)
        padded = F.pad(a, (1, 1, 2, 2)).contiguous(memory_format=torch.channels_last)
        b, _, h, w2 = a.shape
        acc = a.new_empty((b, self.kernels[0].shape[0], h, w2))
        for rho, k in enumerate(self.kernels[:h]):  # a one-row latent has no odd rows
            acc[:, :, rho::2] = self.conv.accumulate(padded[:, :, rho:], k, self.kernels32[rho],
                                                     (2, 1), (0, 0))
        return self.conv._finish(acc, e)


class ExactSequential:
    """An ``nn.Sequential`` of convs and ReLUs, evaluated with :class:`ExactConv`."""

    def __init__(self, seq: nn.Sequential, device: torch.device,
                 arithmetic: Arithmetic = WIDE) -> None:
        self.steps: list[ExactConv | None] = []  # None = ReLU
        for layer in seq:
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                self.steps.append(ExactConv(layer, device, arithmetic))
            elif isinstance(layer, nn.ReLU):
                self.steps.append(None)
            else:
                raise ConfigError(f"exact coding cannot evaluate {type(layer).__name__}")

    def __call__(self, x: Tensor) -> Tensor:
        owned = False  # relu in place only on tensors this network made, never on its input
        for step in self.steps:
            if step is None:
                x = x.relu_() if owned else torch.relu(x)
            else:
                x = step(x)
            owned = True
        return x


class ExactEntropyModel:
    """h_s, the context models and the parameter aggregation of an ELIC, evaluated exactly.

    The same interface as the model's float path (see ``ELIC._coding_path``): ``hyper``,
    ``channel_ctx``, ``anchor``, ``local`` and ``nonanchor``. Intermediate results stay float64;
    the returned scales and means are rounded once to float32.

    ``half_grid`` (the default, files with :data:`app.bitstream.FLAG_HALF_GRID`) evaluates the
    parameter aggregation of each checkerboard half at that half's positions only, and the
    checkerboard context at the non-anchor positions only — the only ones the coder reads, so the
    work of those networks halves. The activation steps of the aggregation's layers then come
    from the maxima over those positions, which is why it is a separate, flagged arithmetic.
    ``half_grid=False`` is the earlier full-grid evaluation (files without the flag), kept so
    that they still decode. ``arithmetic``: :data:`NARROW` (files with
    :data:`app.bitstream.FLAG_NARROW`) or :data:`WIDE`.
    """

    def __init__(self, model: Any, half_grid: bool = True, arithmetic: Arithmetic = NARROW
                 ) -> None:
        device = next(model.parameters()).device
        self.device = device
        self.half_grid = half_grid
        self.arithmetic = arithmetic
        ar = arithmetic
        self.h_s = ExactSequential(model.h_s.increase, device, ar)
        # the half-grid evaluation reads the checkerboard context only
        self.local_context = ([] if half_grid else
                              [ExactConv(c, device, ar) for c in model.local_context])
        self.checkerboard = ([CheckerboardContext(c, device, ar) for c in model.local_context]
                             if half_grid else [])
        self.channel_context: list[ExactSequential | None] = [None] + [
            ExactSequential(c.fushion, device, ar) for c in list(model.channel_context)[1:]
        ]
        self.entropy_anchor = [ExactSequential(p.fusion, device, ar)
                               for p in model.entropy_parameters_anchor]
        self.entropy_nonanchor = [ExactSequential(p.fusion, device, ar)
                                  for p in model.entropy_parameters_nonanchor]

    def context(self) -> Any:
        """cuDNN may pick FFT or Winograd algorithms, which are not exact: use the native kernels."""
        if self.device.type == "cuda":
            return torch.backends.cudnn.flags(enabled=False)
        return nullcontext()

    @staticmethod
    def _f64(parts: Sequence[Tensor]) -> Tensor:
        if len(parts) == 1:
            return parts[0].to(torch.float64)
        # cat promotes float32 parts to float64 (exactly) as it copies mixed parts
        return torch.cat(list(parts), dim=1).to(torch.float64)

    def hyper(self, z_hat: Tensor) -> Any:
        hyper = self.h_s(z_hat.to(torch.float64))
        if not self.half_grid:
            return hyper
        # Both halves are read by every slice: squeeze them once.
        return {parity: squeeze_half(hyper, parity) for parity in (ANCHOR, NONANCHOR)}

    def channel_ctx(self, index: int, decoded: list[Tensor]) -> Tensor | None:
        net = self.channel_context[index]
        return None if net is None else net(self._f64(decoded))

    def _params(self, net: ExactSequential, parts: list[Tensor], parity: int
                ) -> tuple[Tensor, Tensor]:
        out = net(self._f64(parts))
        if self.half_grid:
            out = unsqueeze_half(out, parity)
        scales, means = out.chunk(2, 1)
        return scales.float(), means.float()

    def anchor(self, index: int, ctx: Tensor | None, hyper: Any) -> tuple[Tensor, Tensor]:
        if self.half_grid:
            hyper = hyper[ANCHOR]
            ctx = None if ctx is None else squeeze_half(ctx, ANCHOR)
        parts = [hyper] if ctx is None else [ctx, hyper]
        return self._params(self.entropy_anchor[index], parts, ANCHOR)

    def local(self, index: int, anchor_hat: Tensor) -> Tensor:
        if self.half_grid:
            return self.checkerboard[index](anchor_hat.to(torch.float64))
        return self.local_context[index](anchor_hat.to(torch.float64))

    def nonanchor(self, index: int, local: Tensor, ctx: Tensor | None, hyper: Any
                  ) -> tuple[Tensor, Tensor]:
        if self.half_grid:
            hyper = hyper[NONANCHOR]
            ctx = None if ctx is None else squeeze_half(ctx, NONANCHOR)
        parts = [local, hyper] if ctx is None else [local, ctx, hyper]
        return self._params(self.entropy_nonanchor[index], parts, NONANCHOR)
