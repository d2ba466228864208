"""Building blocks of the JiangWeibeta / TACO ELIC layout.

Every class here keeps the attribute names of the official checkpoints (``branch``, ``fusion``,
``fushion``), so that ``state_dict`` keys line up one to one. The checkerboard helpers implement the
official anchor parity: anchors sit where ``(row + col)`` is **odd**, as in the official
checkpoints (CompressAI's ``anchor_parity="odd"``; its default is "even").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "ANCHOR",
    "NONANCHOR",
    "ChannelContext",
    "EntropyParameters",
    "ResidualBottleneck",
    "checkerboard_mask",
    "conv",
    "deconv",
    "squeeze_half",
    "unsqueeze_half",
]

#: Parity of the anchor half: ``(row + col) % 2 == ANCHOR``.
ANCHOR = 1
#: Parity of the non-anchor half.
NONANCHOR = 0


def conv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """A ``Conv2d`` with ``padding = kernel_size // 2`` (the official convention)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """A ``ConvTranspose2d`` with ``padding = k // 2`` and ``output_padding = stride - 1``."""
    return nn.ConvTranspose2d(
        in_ch,
        out_ch,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        output_padding=stride - 1,
    )


class ResidualBottleneck(nn.Module):
    """``x + branch(x)`` with ``branch`` = 1×1 N→N/2, ReLU, 3×3 N/2→N/2, ReLU, 1×1 N/2→N."""

    def __init__(self, n: int) -> None:
        super().__init__()
        half = n // 2
        self.branch = nn.Sequential(
            conv(n, half, 1, 1),
            nn.ReLU(inplace=True),
            conv(half, half, 3, 1),
            nn.ReLU(inplace=True),
            conv(half, n, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        # in place on the branch's fresh output: the same sums as ``x + branch(x)`` (IEEE addition
        # commutes), without allocating another full-resolution tensor (5–12 ms a transform at
        # 768×512; conv backward does not need its output, so autograd is unaffected)
        return self.branch(x).add_(x)


class ChannelContext(nn.Module):
    """Channel context of one slice: three 5×5 convs over all previously decoded slices.

    The Sequential attribute is spelled ``fushion`` as in the official checkpoints.
    """

    def __init__(self, in_ch: int, out_ch: int, hidden: tuple[int, int] | list[int]) -> None:
        super().__init__()
        h1, h2 = int(hidden[0]), int(hidden[1])
        self.fushion = nn.Sequential(
            conv(in_ch, h1, 5, 1),
            nn.ReLU(inplace=True),
            conv(h1, h2, 5, 1),
            nn.ReLU(inplace=True),
            conv(h2, out_ch, 5, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fushion(x)


class EntropyParameters(nn.Module):
    """Parameter aggregation: three 1×1 convs ``in → ⌊5·out/3⌋ → ⌊4·out/3⌋ → out`` (``fusion``).

    The output is chunked into ``(scales, means)``, scales first.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid1, mid2 = out_ch * 5 // 3, out_ch * 4 // 3
        self.fusion = nn.Sequential(
            conv(in_ch, mid1, 1, 1),
            nn.ReLU(inplace=True),
            conv(mid1, mid2, 1, 1),
            nn.ReLU(inplace=True),
            conv(mid2, out_ch, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fusion(x)


def checkerboard_mask(
    height: int, width: int, parity: int, device: torch.device | None = None
) -> Tensor:
    """Boolean ``(1, 1, H, W)`` mask that is True where ``(row + col) % 2 == parity``."""
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    return ((rows + cols) % 2 == parity).view(1, 1, height, width)


def squeeze_half(t: Tensor, parity: int) -> Tensor:
    """Keep one checkerboard half of ``t`` (B, C, H, W) as a dense (B, C, H, W/2) tensor.

    Row ``r`` keeps the columns ``c`` with ``(r + c) % 2 == parity``, in increasing order, so a
    C-order flattening of the result is the official symbol order of that half (per slice, the
    anchor half then the non-anchor half, each in C order over (C, H, W/2)).
    """
    b, c, h, w = t.shape
    if w % 2:
        raise ValueError(f"latent width must be even for the checkerboard, got {w}")
    out = t.new_empty((b, c, h, w // 2))
    out[:, :, 0::2] = t[:, :, 0::2, parity::2]
    out[:, :, 1::2] = t[:, :, 1::2, 1 - parity :: 2]
    return out


def unsqueeze_half(t: Tensor, parity: int) -> Tensor:
    """Inverse of :func:`squeeze_half`: scatter (B, C, H, W/2) back to (B, C, H, W), zeros elsewhere."""
    b, c, h, w2 = t.shape
    out = t.new_zeros((b, c, h, w2 * 2))
    out[:, :, 0::2, parity::2] = t[:, :, 0::2]
    out[:, :, 1::2, 1 - parity :: 2] = t[:, :, 1::2]
    return out
