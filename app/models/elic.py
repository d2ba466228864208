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

Real entropy coding (both coding paths) is :class:`app.models.coding.RealCoding`, which ELIC
inherits; the transforms are in :mod:`app.models.transforms`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import AttentionBlock
from torch import Tensor, nn

from app.errors import ConfigError
from app.models.coding import (
    CODING_THREADS,
    CODINGS,
    FLOAT,
    PORTABLE,
    RealCoding,
    coding_threads,
    symbols_crc,
)
from app.models.config import validate_config
from app.models.gain import initial_gains, interpolate_gain
from app.models.layers import (
    ANCHOR,
    ChannelContext,
    EntropyParameters,
    ResidualBottleneck,
    checkerboard_mask,
    conv,
)
from app.models.transforms import (
    AnalysisTransform,
    HyperAnalysis,
    HyperSynthesis,
    SynthesisTransform,
)

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


def _ste_round(x: Tensor) -> Tensor:
    """Rounding with a straight-through gradient (value identical to ``torch.round``)."""
    if x.requires_grad:
        return (torch.round(x) - x).detach() + x
    return torch.round(x)


class ELIC(RealCoding):
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
