"""TACO's text adapter: the Injector (image attends to text) and the Extractor (text attends to image).

ViT-Adapter style, 8-head cross-attention. Key names follow the official checkpoints
(``text_feature_dim_proj`` / ``image_feature_dim_proj``, ``image_norm``, ``text_norm``,
``cross_attn``, ``gamma``).

The two compatibility quirks of the official code are reproduced on purpose (official weights
give wrong results without them):

1. the Injector adds its gated attention term to the **LayerNormed** image tokens, not to the raw
   features, so even with ``gamma == 0`` the block applies a per-position channel LayerNorm;
2. by default no ``key_padding_mask`` is used: all text positions (padding included) are attended to.

``residual="identity"`` (the embedded layout's option, not the official one) adds the gated term to
the raw image features instead: ``x + gamma * attn(LN(x), text)``, an exact identity while
``gamma == 0``, so an adapter inserted into a trained ELIC encoder leaves it unchanged at
initialisation. The weights have the same names and shapes in both variants.

``attn_mask=True`` builds the "clean" variant that masks padded text positions when a token mask is
given; it is not checkpoint-compatible in behaviour (the weights have the same shapes).

Both blocks always ask ``nn.MultiheadAttention`` for its head-averaged weights (the official call
uses the default ``need_weights=True``, which also fixes the numerical path). When
``keep_attention`` is set, the weights of the last forward are kept in ``last_attention`` as a
``(B, L, H, W)`` tensor: one spatial heat-map per text token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Extractor", "Injector", "padding_mask"]


def padding_mask(text_mask: Tensor | None) -> Tensor | None:
    """Turn a (B, L) token mask (1 = real token) into a ``key_padding_mask`` (True = ignore).

    A row without any real token is left unmasked, so attention never divides by zero.
    """
    if text_mask is None:
        return None
    ignore = text_mask == 0
    empty = ignore.all(dim=1, keepdim=True)
    return ignore & ~empty


def _to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H·W, C)."""
    return x.flatten(2).transpose(1, 2)


class Injector(nn.Module):
    """Image tokens attend to the (projected) text; output ``LN(img) + gamma * attn``.

    Args:
        dim: image feature channels (N).
        text_dim: width of the text token states (512 CLIP, 384 MiniLM).
        heads: attention heads (embed ``dim``).
        attn_mask: mask padded text positions when a token mask is passed (not the official path).
        residual: ``"layernorm"`` (official: ``LN(x) + gamma * attn``) or ``"identity"``
            (``x + gamma * attn``: exactly ``x`` while ``gamma == 0``).
    """

    RESIDUALS = ("layernorm", "identity")

    def __init__(self, dim: int, text_dim: int, heads: int = 8, attn_mask: bool = False,
                 residual: str = "layernorm") -> None:
        super().__init__()
        if residual not in self.RESIDUALS:
            raise ValueError(f"residual must be one of {self.RESIDUALS}, got {residual!r}")
        self.residual = residual
        self.text_feature_dim_proj = nn.Linear(text_dim, dim)
        nn.init.kaiming_normal_(self.text_feature_dim_proj.weight)
        self.image_norm = nn.LayerNorm(dim)
        self.text_norm = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.attn_mask = bool(attn_mask)
        self.keep_attention = False
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        query = self.image_norm(_to_tokens(x))
        text_feat = self.text_norm(self.text_feature_dim_proj(text))
        mask = padding_mask(text_mask) if self.attn_mask else None
        attn, weights = self.cross_attn(
            query, text_feat, text_feat, key_padding_mask=mask, need_weights=True
        )
        if self.keep_attention and weights is not None:
            # (B, HW, L) -> (B, L, H, W)
            self.last_attention = weights.detach().transpose(1, 2).reshape(b, -1, h, w)
        delta = (self.gamma * attn).transpose(1, 2).reshape(b, c, h, w)
        if self.residual == "identity":
            return x + delta
        return query.transpose(1, 2).reshape(b, c, h, w) + delta


class Extractor(nn.Module):
    """Text tokens attend to the (projected) image; output ``LN(text) + attn`` (no gate).

    The updated text feeds only the second Injector.
    """

    def __init__(self, dim: int, text_dim: int, heads: int = 8, attn_mask: bool = False) -> None:
        super().__init__()
        self.image_feature_dim_proj = nn.Linear(dim, text_dim)
        nn.init.kaiming_normal_(self.image_feature_dim_proj.weight)
        self.image_norm = nn.LayerNorm(text_dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.cross_attn = nn.MultiheadAttention(text_dim, heads, batch_first=True)
        self.attn_mask = bool(attn_mask)
        self.keep_attention = False
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        _, _, h, w = x.shape
        image_feat = self.image_norm(self.image_feature_dim_proj(_to_tokens(x)))
        query = self.text_norm(text)
        attn, weights = self.cross_attn(query, image_feat, image_feat, need_weights=True)
        if self.keep_attention and weights is not None:
            # (B, L, HW) -> (B, L, H, W)
            self.last_attention = weights.detach().reshape(weights.shape[0], -1, h, w)
        # Padded text queries are computed too; in the masked variant Injector #2 ignores them.
        return query + attn
