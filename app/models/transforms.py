"""ELIC's four transforms: g_a (analysis), g_s (synthesis), h_a and h_s (hyperprior).

Attribute names follow the official state_dict (``g_a.analysis_transform.i``,
``g_s.synthesis_transform.i``, ``h_a.reduction``, ``h_s.increase``).
"""

from __future__ import annotations

from collections.abc import Sequence

from compressai.layers import AttentionBlock
from torch import Tensor, nn

from app.models.adapter import Extractor, Injector
from app.models.layers import ResidualBottleneck, conv, deconv


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
