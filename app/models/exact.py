"""Portable coding: exact arithmetic for every number the entropy decoder must reproduce.

The rANS decoder finds each symbol only if it is given exactly the scale index and mean the encoder
used. In ELIC those come from h_s, the channel and checkerboard context models and the parameter
aggregation — float32 convolutions whose last bits depend on the instruction set (AVX-512, AVX2,
SSE4.1, ARM), the BLAS / oneDNN kernel, the thread count and the device. One ULP in a mean or a
scale index desynchronises the decoder and the rest of the image turns to garbage. This module
runs those networks so that the result is the same on every IEEE-754 machine (post-training
integerisation in the spirit of He et al. 2022, arXiv 2202.07513; no retraining, no calibration
data):

* **Weights** of every conv / transposed conv are quantised once, when the coder is built, per
  output channel to signed 16-bit integers: ``step_c = max|w_c| / 32767``, ``w_int = round(w /
  step_c)``. Only a max, a division and a rounding of the stored float32 weights are involved, all
  exact or correctly rounded IEEE operations, so every machine derives the same integers.
* **Activations** entering each conv are quantised per image to signed 24-bit integers with a
  power-of-two step taken from their exact maximum: ``e = frexp(max|a|).exponent``, ``a_int =
  round(a · 2^(23 − e))``. The step adapts to any range (official or embedded weights, any λ).
* **Convolutions** run in float64 on these integer-valued tensors. Every product is below
  2^15 · 2^23 and the weights' L1 norm is checked when the coder is built so that every partial sum
  stays below 2^53: float64 represents all of them exactly, so the result does not depend on the
  summation order, blocking, SIMD width, thread count, BLAS or device (cuDNN is bypassed).
* **Rescaling** ``acc · (step_c · 2^(e−23)) + bias_c`` (the bracket is exact: a power-of-two
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
8-bit level after rounding; it never desynchronises anything). The rate–distortion cost of the
integerisation is measured in docs/RESULTS.md (24-bit activations, 16-bit weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.errors import ConfigError
from app.models.layers import ANCHOR, NONANCHOR, squeeze_half, unsqueeze_half

__all__ = ["ACT_SHIFT", "WEIGHT_MAX", "ExactConv", "ExactEntropyModel", "pow2", "quantise"]

#: Largest weight magnitude: signed 16-bit.
WEIGHT_MAX = 2**15 - 1
#: Activations are scaled so that ``|a_int| <= 2^ACT_SHIFT`` (signed 24-bit).
ACT_SHIFT = 23
#: float64 represents every integer below this exactly.
EXACT_LIMIT = 2**53


def pow2(k: Tensor) -> Tensor:
    """Exactly ``2.0 ** k`` in float64 for integer ``k`` in [-1022, 1023], built from the bits.

    (``torch.pow`` / ``ldexp`` go through ``exp2``-style kernels that need not be exact.)
    """
    return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)


def quantise(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample 24-bit quantisation of ``x`` (B, ...) float64: ``(a_int, e)``, ``x ≈ a_int·2^(e−23)``.

    ``e`` (B,) is the binary exponent of the sample's largest magnitude (0 for an all-zero sample),
    so ``|a_int| <= 2^23``. Raises ``FloatingPointError`` on non-finite input.
    """
    # amax / amin over all non-batch dims at once: exact (a max does not round), and several
    # times faster than ``aminmax`` over ``flatten(1)``, which copies a channels-last tensor.
    dims = tuple(range(1, x.dim()))
    peak = torch.maximum(x.amax(dim=dims), x.amin(dim=dims).neg_())
    if not bool(torch.isfinite(peak).all()):
        raise FloatingPointError("non-finite value in the entropy model")
    _, e = torch.frexp(peak)
    e = e.to(torch.int64)
    scale = pow2(ACT_SHIFT - e).view(-1, *([1] * (x.dim() - 1)))
    return (x * scale).round_(), e


class ExactConv:
    """A ``Conv2d`` or ``ConvTranspose2d`` evaluated exactly (see the module docstring)."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d, device: torch.device) -> None:
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        if layer.groups != 1 or tuple(layer.dilation) != (1, 1):
            raise ConfigError("exact coding supports plain convolutions only")
        w = layer.weight.detach().to("cpu", torch.float64)
        out_dim = 1 if self.transposed else 0
        reduce = tuple(d for d in range(4) if d != out_dim)
        peak = w.abs().amax(dim=reduce, keepdim=True)
        step = torch.where(peak > 0, peak / WEIGHT_MAX, torch.ones_like(peak))
        w_int = torch.round(w / step).clamp(-WEIGHT_MAX, WEIGHT_MAX)
        l1 = float(w_int.abs().sum(dim=reduce).max())
        if l1 * 2**ACT_SHIFT >= EXACT_LIMIT:
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
        # Channels-last float64 convs run ~20 % faster on CPU (a layout only: the integer sums
        # are exact either way).
        self.channels_last = not self.transposed and self.kernel != (1, 1)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.weight = w_int.to(device).contiguous(memory_format=fmt)
        self.step = step.reshape(1, -1, 1, 1).to(device)
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[out_dim])
        self.bias = bias.to("cpu", torch.float64).reshape(1, -1, 1, 1).to(device)

    def _finish(self, acc: Tensor, e: Tensor) -> Tensor:
        # step_c · 2^(e-ACT_SHIFT) is exact (a power-of-two multiple), so one product rounds
        # exactly as the two would; a separate addition, never a fused multiply-add.
        scale = self.step * pow2(e - ACT_SHIFT).view(-1, 1, 1, 1)
        return acc.mul_(scale).add_(self.bias)

    def __call__(self, x: Tensor) -> Tensor:
        a, e = quantise(x)
        if self.transposed:
            acc = F.conv_transpose2d(a, self.weight, None, self.stride, self.padding,
                                     self.output_padding)
        else:
            if self.channels_last:
                a = a.contiguous(memory_format=torch.channels_last)
            acc = F.conv2d(a, self.weight, None, self.stride, self.padding)
        return self._finish(acc, e)


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

    def __init__(self, layer: nn.Conv2d, device: torch.device) -> None:
        self.conv = ExactConv(layer, device)
        kh, kw = self.conv.kernel
        if (kh, kw) != (5, 5) or self.conv.padding != (2, 2) or self.conv.stride != (1, 1):
            self.kernels: list[Tensor] | None = None  # other shapes: full conv, then squeeze
            return
        w = self.conv.weight.contiguous()
        self.kernels = []
        for rho in (0, 1):  # output row parity; the non-anchor column is 2j + rho
            k = w.new_zeros((*w.shape[:2], 5, 3))
            for dr in range(-2, 3):
                for dc in range(-2, 3):
                    if (dr + dc) % 2 == 0:
                        continue  # lands on a non-anchor input: zero
                    s = (rho + dc - 1 + (rho + dr) % 2) // 2
                    k[:, :, dr + 2, s + 1] = w[:, :, dr + 2, dc + 2]
            self.kernels.append(k.contiguous(memory_format=torch.channels_last))

    def __call__(self, anchor_hat: Tensor) -> Tensor:
        """``anchor_hat`` (B, C, H, W), zero off the anchors -> non-anchor outputs (B, C', H, W/2)."""
        if self.kernels is None or NONANCHOR != 0:
            return squeeze_half(self.conv(anchor_hat), NONANCHOR)
        # max|x| over the anchors equals max|x| over the full tensor (the rest is zeros).
        a, e = quantise(squeeze_half(anchor_hat, ANCHOR))
        padded = F.pad(a, (1, 1, 2, 2)).contiguous(memory_format=torch.channels_last)
        b, _, h, w2 = a.shape
        acc = a.new_empty((b, self.kernels[0].shape[0], h, w2))
        for rho, k in enumerate(self.kernels[:h]):  # a one-row latent has no odd rows
            acc[:, :, rho::2] = F.conv2d(padded[:, :, rho:], k, None, (2, 1))
        return self.conv._finish(acc, e)


class ExactSequential:
    """An ``nn.Sequential`` of convs and ReLUs, evaluated with :class:`ExactConv`."""

    def __init__(self, seq: nn.Sequential, device: torch.device) -> None:
        self.steps: list[ExactConv | None] = []  # None = ReLU
        for layer in seq:
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                self.steps.append(ExactConv(layer, device))
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
    that they still decode.
    """

    def __init__(self, model: Any, half_grid: bool = True) -> None:
        device = next(model.parameters()).device
        self.device = device
        self.half_grid = half_grid
        self.h_s = ExactSequential(model.h_s.increase, device)
        self.local_context = [ExactConv(c, device) for c in model.local_context]
        self.checkerboard = ([CheckerboardContext(c, device) for c in model.local_context]
                             if half_grid else [])
        self.channel_context: list[ExactSequential | None] = [None] + [
            ExactSequential(c.fushion, device) for c in list(model.channel_context)[1:]
        ]
        self.entropy_anchor = [ExactSequential(p.fusion, device)
                               for p in model.entropy_parameters_anchor]
        self.entropy_nonanchor = [ExactSequential(p.fusion, device)
                                  for p in model.entropy_parameters_nonanchor]

    def context(self) -> Any:
        """cuDNN may pick FFT or Winograd algorithms, which are not exact: use the native kernels."""
        if self.device.type == "cuda":
            return torch.backends.cudnn.flags(enabled=False)
        return nullcontext()

    @staticmethod
    def _f64(parts: Sequence[Tensor]) -> Tensor:
        return torch.cat([p.to(torch.float64) for p in parts], dim=1)

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
