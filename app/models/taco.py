"""TACO = ELIC + a text adapter inside g_a.

``g_a.analysis_transform`` gets an Injector at index 8 (1/4 resolution, before AttentionBlock(N)),
and an Extractor then a second Injector at 14 and 15 (1/8 resolution, before the last downsampling
conv). Hyperprior, entropy model and decoder are ELIC's and never see the text: ``decompress`` has
no text argument and the bitstream carries no caption.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from app.models.adapter import Extractor, Injector
from app.models.elic import ELIC

__all__ = ["TACO"]

#: g_a indices of the adapter blocks (official layout).
ADAPTER_INDICES = {"injector1": 8, "extractor": 14, "injector2": 15}


class TACO(ELIC):
    """Text-guided ELIC. ``text`` is (B, L, text_dim) token states (CLIP 512 / MiniLM 384)."""

    uses_text = True

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)

    def _analysis_layers(self) -> list[nn.Module]:
        n, dim, heads, masked = (
            self.N,
            self.cfg["text_dim"],
            self.cfg["heads"],
            self.cfg["attn_mask"],
        )
        residual = self.cfg.get("injector_residual", "layernorm")
        layers = self._trunk()
        # ELIC 0-7 | Inj | ELIC 8-12 | Ext, Inj | ELIC 13-14  ->  TACO indices 8, 14, 15
        return [
            *layers[:8],
            Injector(n, dim, heads, masked, residual),
            *layers[8:13],
            Extractor(n, dim, heads, masked),
            Injector(n, dim, heads, masked, residual),
            *layers[13:],
        ]

    def _analysis(self, x: Tensor, text: Tensor | None, text_mask: Tensor | None) -> Tensor:
        if text is None:
            raise ValueError(
                "TACO needs text token states (B, L, text_dim); encode an empty caption for 'no caption'"
            )
        dim = self.cfg["text_dim"]
        if text.dim() != 3 or text.shape[0] != x.shape[0] or text.shape[-1] != dim:
            raise ValueError(
                f"text must be (B={x.shape[0]}, L, {dim}) token states, got {tuple(text.shape)}"
            )
        return self.g_a(x, text.to(x.dtype), text_mask)

    # ------------------------------------------------------------------ attention maps
    def adapter(self, which: str) -> Injector | Extractor:
        """The adapter block ``"injector1"``, ``"extractor"`` or ``"injector2"``."""
        block = self.g_a.analysis_transform[ADAPTER_INDICES[which]]
        assert isinstance(block, Injector | Extractor)
        return block

    def keep_attention(self, enabled: bool = True) -> None:
        """Keep (or stop keeping) the head-averaged attention weights of the next forwards."""
        for which in ADAPTER_INDICES:
            block = self.adapter(which)
            block.keep_attention = enabled
            if not enabled:
                block.last_attention = None

    def attention_maps(self) -> dict[str, Tensor]:
        """Head-averaged attention of the last forward/compress as (B, L, H, W) per adapter block.

        ``injector1`` (1/4 resolution) and ``injector2`` (1/8): how much each image position
        attends to text token ``l`` (sums to 1 over ``l``). ``extractor`` (1/8): where text token
        ``l`` looks in the image (sums to 1 over H·W). Empty until :meth:`keep_attention` is on
        and a forward has run.
        """
        maps: dict[str, Tensor] = {}
        for which in ADAPTER_INDICES:
            weights = self.adapter(which).last_attention
            if weights is not None:
                maps[which] = weights
        return maps
