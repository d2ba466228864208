"""Training objectives, after the official TACO ``RateDistortionLoss``.

``L = bpp + λ·255²·MSE(x̂, x) + k_P·LPIPS(x̂, x) + k_J·L_J``

* **bpp** — Σ over the y and z likelihoods of −log₂ p, divided by B·H·W (noise-relaxed
  likelihoods from the model's training forward): :func:`bpp_from_likelihoods`.
* **MSE** — mean over [0, 1] RGB; λ·255² is CompressAI's convention. λ may be a python float (one
  λ per batch) or a (B,) tensor (one λ per sample, for variable-rate models that support it).
* **LPIPS** — AlexNet v0.1, frozen. We call it with ``normalize=True`` on [0, 1] inputs, the
  **standard** convention. The official TACO code feeds [0, 1] *without* ``normalize``, which
  gives smaller values and weaker gradients; our k_P values are scaled for the standard
  convention (see the training configs).
* **L_J** (joint image-text loss, :class:`JointImageTextLoss`) — symmetric CLIP contrastive loss
  between the caption embeddings and the embeddings of x̂ at a **fixed** logit scale exp(2.6592)
  (CLIP's initial value, as in the official code), plus β·‖ê(x̂) − ê(x)‖_F with β = 40 (Frobenius
  norm over the whole B×D matrix: not squared, not averaged). ê are L2-normalised CLIP image
  embeddings after the differentiable CLIP preprocessing of :func:`clip_preprocess`. Gradients flow
  only through x̂. k_P and k_J are not multiplied by λ.

Offline there are no CLIP weights (no package ships them): :func:`load_clip` returns ``None`` with a
reason and the trainer sets k_J = 0 with a logged notice. The loss itself is fully implemented and
tested on a tiny random open_clip model (:func:`build_tiny_clip`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: CLIP's image normalisation constants (OpenAI CLIP / open_clip "openai").
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
#: log of the fixed logit scale used by the official loss (CLIP's init; scale ≈ 14.29).
OFFICIAL_LOGIT_SCALE_LOG = 2.6592
#: Weight of the image-embedding term inside L_J.
OFFICIAL_BETA = 40.0
#: Caption length of the official tokeniser (BOS and EOS included).
OFFICIAL_TEXT_LEN = 38


def bpp_from_likelihoods(likelihoods: Mapping[str, Tensor], num_pixels: int) -> Tensor:
    """Rate in bits per pixel: Σ −log₂ p over all likelihood tensors / ``num_pixels`` (B·H·W).

    Computed in float32 whatever the likelihood dtype.
    """
    total = sum(torch.log(lk.float()).sum() for lk in likelihoods.values())
    return torch.as_tensor(total) / (-math.log(2) * num_pixels)


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB for an MSE on a [0, peak] scale (inf for a perfect match)."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def clip_preprocess(x: Tensor, size: int = 224) -> Tensor:
    """Differentiable CLIP image preprocessing of [0, 1] images, as in the official loss.

    Resize the short side to ``size`` (bilinear, antialiased: torchvision ``Resize`` on tensors),
    center-crop ``size``², normalise with CLIP's mean/std. The official ×255 … ×1/255 pair is an
    identity and is left out.
    """
    h, w = x.shape[-2:]
    if min(h, w) != size:
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        h, w = nh, nw
    top, left = (h - size) // 2, (w - size) // 2
    x = x[..., top : top + size, left : left + size]
    mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class JointImageTextLoss(nn.Module):
    """TACO's L_J = symmetric CLIP contrastive + β·‖ê(x̂) − ê(x)‖_F, on frozen CLIP towers.

    ``clip_model`` is anything with ``encode_image(pixels)`` and ``encode_text(tokens)`` (open_clip's
    ``CLIP``); ``tokenizer(list[str]) -> LongTensor`` produces its tokens. Captions are truncated to
    ``text_len`` tokens (38, BOS/EOS included, as the official HF tokeniser) and zero-padded to the
    model's context length: CLIP's causal text transformer pools at EOS, so the padding cannot
    change the embedding.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer: Callable[..., Tensor],
        beta: float = OFFICIAL_BETA,
        logit_scale_log: float = OFFICIAL_LOGIT_SCALE_LOG,
        text_len: int = OFFICIAL_TEXT_LEN,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        # open_clip's models are duck-typed (encode_image / encode_text), not a declared nn type
        self.clip: Any = clip_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.beta = float(beta)
        self.logit_scale = math.exp(logit_scale_log)
        self.text_len = int(text_len)
        self.image_size = int(image_size)
        self.context_length = int(getattr(clip_model, "context_length", 77))

    def train(self, mode: bool = True) -> JointImageTextLoss:  # CLIP stays frozen in eval mode
        return super().train(False)

    @torch.no_grad()
    def embed_text(self, captions: Sequence[str], batch_size: int = 64) -> Tensor:
        """L2-normalised CLIP text embeddings (N, D) of captions (cache these once per caption)."""
        outs: list[Tensor] = []
        device = next(self.clip.parameters()).device
        for i in range(0, len(captions), batch_size):
            chunk = list(captions[i : i + batch_size])
            tok = self.tokenizer(chunk, context_length=self.text_len)
            if tok.shape[1] < self.context_length:
                tok = F.pad(tok, (0, self.context_length - tok.shape[1]))
            outs.append(F.normalize(self.clip.encode_text(tok.to(device)).float(), dim=-1))
        return torch.cat(outs) if outs else torch.empty(0)

    def embed_image(self, x: Tensor) -> Tensor:
        """L2-normalised CLIP image embeddings of [0, 1] images (differentiable)."""
        return F.normalize(self.clip.encode_image(clip_preprocess(x, self.image_size)).float(), dim=-1)

    def forward(self, x_hat: Tensor, x: Tensor, text_emb: Tensor) -> dict[str, Tensor]:
        """Return ``{"joint", "contrastive", "image"}`` for a batch; ``text_emb`` is (B, D) normalised."""
        e_hat = self.embed_image(x_hat)
        with torch.no_grad():
            e_ref = self.embed_image(x)
        logits = self.logit_scale * text_emb.to(e_hat) @ e_hat.t()  # (B_text, B_image)
        labels = torch.arange(logits.shape[0], device=logits.device)
        contrastive = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        image = torch.linalg.matrix_norm(e_hat - e_ref, ord="fro")
        return {
            "joint": contrastive + self.beta * image,
            "contrastive": contrastive,
            "image": image,
        }


def build_tiny_clip(embed_dim: int = 16, width: int = 32, seed: int = 0) -> nn.Module:
    """A tiny random open_clip ``CLIP`` (ViT/32 at 224², 1 layer per tower): tests only, no download."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.model.CLIP(
        embed_dim=embed_dim,
        vision_cfg={"image_size": 224, "patch_size": 32, "width": width, "layers": 1,
                    "head_width": width // 2},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": width, "heads": 2,
                  "layers": 1},
        quick_gelu=True,
    )


def load_clip(
    model_name: str = "ViT-B-32",
    pretrained: str = "openai",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module | None, Callable[..., Tensor] | None, str]:
    """Frozen open_clip model + tokenizer for L_J, or ``(None, None, reason)`` when unavailable.

    ``checkpoint`` (a local open_clip/OpenAI weight file) wins over ``pretrained``. With
    ``HF_HUB_OFFLINE=1`` (the Makefile's default) open_clip looks only at the local HF cache, so the
    call fails fast offline instead of hanging on the network.
    """
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - open_clip is a pinned requirement
        return None, None, f"open_clip not importable ({exc})"
    source = str(checkpoint) if checkpoint else pretrained
    hf_constants: Any = None
    saved_offline = None
    if not checkpoint:
        from app.hub import hub_reachable

        if not hub_reachable():  # look only in the local cache: no retries against a dead network
            import huggingface_hub.constants as hf_constants

            saved_offline = hf_constants.HF_HUB_OFFLINE
            hf_constants.HF_HUB_OFFLINE = True
    try:
        model = open_clip.create_model(model_name, pretrained=source, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # noqa: BLE001 - any failure means "no CLIP here"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, None, f"CLIP {model_name}/{source} unavailable ({type(exc).__name__}: {first})"
    finally:
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = saved_offline
    model.eval().requires_grad_(False)
    return model, tokenizer, f"CLIP {model_name}/{source} loaded"


class RateDistortionLoss(nn.Module):
    """``bpp + λ·255²·MSE + k_P·LPIPS + k_J·L_J``, the form of the official TACO objective.

    ``lpips`` is a frozen module called as ``lpips(x_hat, x, normalize=True)`` (standard
    convention); ``joint`` a :class:`JointImageTextLoss`. Either may be ``None`` when its
    coefficient is 0. Returns a dict of tensors: ``loss``, ``bpp``, ``mse`` and, when used,
    ``lpips``, ``joint``, ``contrastive``, ``image``.
    """

    def __init__(
        self,
        k_p: float = 0.0,
        k_j: float = 0.0,
        lpips: nn.Module | None = None,
        joint: JointImageTextLoss | None = None,
        lpips_normalize: bool = True,
    ) -> None:
        super().__init__()
        if k_p > 0 and lpips is None:
            raise ValueError("k_P > 0 needs an LPIPS module")
        if k_j > 0 and joint is None:
            raise ValueError("k_J > 0 needs a JointImageTextLoss")
        self.k_p, self.k_j = float(k_p), float(k_j)
        self.lpips = lpips
        self.joint = joint
        self.lpips_normalize = lpips_normalize

    def forward(
        self,
        output: Mapping[str, Any],
        target: Tensor,
        lmbda: float | Tensor,
        text_emb: Tensor | None = None,
        k_p_scale: float | Tensor = 1.0,
    ) -> dict[str, Tensor]:
        """``k_p_scale`` multiplies ``k_P``: a float, or a (B,) tensor weighting each sample's LPIPS
        (a λ-proportional LPIPS weight keeps the LPIPS/MSE ratio constant over the rate range)."""
        x_hat = output["x_hat"].float()
        target = target.float()
        b, _, h, w = target.shape
        out: dict[str, Tensor] = {}
        out["bpp"] = bpp_from_likelihoods(output["likelihoods"], b * h * w)
        per_sample_mse = (x_hat - target).pow(2).flatten(1).mean(1)
        out["mse"] = per_sample_mse.mean()
        if isinstance(lmbda, Tensor) and lmbda.numel() > 1:
            distortion = (lmbda.to(per_sample_mse) * per_sample_mse).mean()
        else:
            distortion = float(lmbda) * out["mse"]
        loss = out["bpp"] + 255.0**2 * distortion
        if self.k_p > 0 and self.lpips is not None:
            per_sample_lpips = self.lpips(x_hat, target, normalize=self.lpips_normalize).reshape(b, -1).mean(1)
            out["lpips"] = per_sample_lpips.mean()
            if isinstance(k_p_scale, Tensor):
                weighted = (k_p_scale.to(per_sample_lpips).reshape(-1) * per_sample_lpips).mean()
            else:
                weighted = float(k_p_scale) * out["lpips"]
            loss = loss + self.k_p * weighted
        if self.k_j > 0 and self.joint is not None:
            if text_emb is None:
                raise ValueError("k_J > 0 needs the captions' CLIP text embeddings")
            out.update(self.joint(x_hat, target, text_emb))
            loss = loss + self.k_j * out["joint"]
        out["loss"] = loss
        return out
