"""The project's settings: one frozen object built from the environment once, then passed down.

Every ``TACO_*`` environment variable the package honours is read here and nowhere else, and only
when :func:`get_settings` is first called (never at import). Code that needs a setting takes a
``Settings`` argument or calls :func:`get_settings`; tests build their own with
:meth:`Settings.from_env` and install it with :func:`use_settings`.

=========================  ==========================================================  ===========
variable                   meaning                                                     default
=========================  ==========================================================  ===========
TACO_CHECKPOINT_DIR        shipped weights and ``manifest.json``                        checkpoints/
TACO_OFFICIAL_DIR          the authors' ``lambda_*.pth.tar`` checkpoints               <ckpt>/official
TACO_SHARED                the read-only data / spec folder beside the checkout        ../shared
TACO_DATA_ROOT             training / evaluation images                                <shared>/data
TACO_MAX_PIXELS            largest image a learned codec encodes or decodes            2048*2048
TACO_ALLOW_RANDOM          1: let a codec run on random weights (tiny test models)     0
TACO_DEBUG                 1: the CLI prints tracebacks                                0
TACO_DECODE_TIMEOUT_S      seconds one isolated decode may take                        120
TACO_ISOLATE_DECODE        0: decode untrusted files in-process                        1
TACO_EVAL_DIST_TIMEOUT_S   seconds a sharded evaluation waits for its peers            172800
TACO_MODEL_SET             the UI's model set (``tiny``: tiny random models)           all found
TACO_UI_MAX_SIDE           the UI resizes uploads to this longest side                 768
TACO_UI_CACHE_ENTRIES      results the UI keeps per process                            48
TACO_UI_MAX_DECODE_PIXELS  largest image the UI's decode tab accepts                   2*side^2
TACO_UI_CONCURRENCY        heavy UI requests run at once                               1
TACO_UI_QUEUE              UI requests waiting at most                                 16
TACO_UI_WEBFONTS           1: the UI loads Google web fonts                            0
TACO_UI_START_EXAMPLE      1: the page opens on the first example with its results     1
TACO_UI_PREPARE            1: a new image's caption-free work starts on upload         1
TACO_CLIP_DIR              a local CLIP text model (transformers layout)               —
TACO_MINILM_DIR            a local MiniLM sentence model                               —
TACO_OPENCLIP_DIR          a local open_clip model for CLIPScore                       —
TACO_BLIP_DIR              a local BLIP captioning model                               —
TACO_FETCH_OFFICIAL        1: fetch the official TACO weights and CLIP at start-up     0
=========================  ==========================================================  ===========
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.errors import ConfigError

#: The repository root (the folder holding ``app/``, ``checkpoints/`` and ``app.py``).
REPO_ROOT = Path(__file__).resolve().parents[1]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={env[name]!r}: expected one of 1/0, true/false, yes/no, on/off")


def _number(env: Mapping[str, str], name: str, default: float, kind: type = int) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a {kind.__name__}") from None
    if number <= 0:
        raise ConfigError(f"{name}={value!r}: must be positive")
    return number


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class Settings:
    """Every run-time setting of the package (see the module docstring for the variables)."""

    root: Path = REPO_ROOT
    checkpoint_dir: Path = REPO_ROOT / "checkpoints"
    official_dir: Path = REPO_ROOT / "checkpoints" / "official"
    shared_dir: Path = REPO_ROOT.parent / "shared"
    data_root: Path = REPO_ROOT.parent / "shared" / "data"
    max_pixels: int = 2048 * 2048
    allow_random: bool = False
    debug: bool = False
    decode_timeout_s: float = 120.0
    isolate_decode: bool = True
    #: a rank that finished its shard waits at a barrier for the slowest one; a COCO-30k shard
    #: takes hours, so the collective timeout must outlast it
    eval_dist_timeout_s: float = 48 * 3600.0
    model_set: str = ""
    ui_max_side: int = 768
    ui_cache_entries: int = 48
    ui_max_decode_pixels: int = 2 * 768 * 768
    ui_concurrency: int = 1
    ui_queue: int = 16
    ui_webfonts: bool = False
    ui_start_example: bool = True
    ui_prepare: bool = True
    clip_dir: Path | None = None
    minilm_dir: Path | None = None
    openclip_dir: Path | None = None
    blip_dir: Path | None = None
    fetch_official: bool = False

    @property
    def manifest(self) -> Path:
        """The checkpoint manifest (names, hashes, configs and provenance of the shipped weights)."""
        return self.checkpoint_dir / "manifest.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default: the process environment); a bad value raises ConfigError."""
        env = os.environ if env is None else env
        checkpoint_dir = _path(env, "TACO_CHECKPOINT_DIR") or REPO_ROOT / "checkpoints"
        shared = _path(env, "TACO_SHARED") or REPO_ROOT.parent / "shared"
        side = int(_number(env, "TACO_UI_MAX_SIDE", 768))
        return cls(
            root=REPO_ROOT,
            checkpoint_dir=checkpoint_dir,
            official_dir=_path(env, "TACO_OFFICIAL_DIR") or checkpoint_dir / "official",
            shared_dir=shared,
            data_root=_path(env, "TACO_DATA_ROOT") or shared / "data",
            max_pixels=int(_number(env, "TACO_MAX_PIXELS", 2048 * 2048)),
            allow_random=_flag(env, "TACO_ALLOW_RANDOM", False),
            debug=_flag(env, "TACO_DEBUG", False),
            decode_timeout_s=float(_number(env, "TACO_DECODE_TIMEOUT_S", 120.0, float)),
            isolate_decode=_flag(env, "TACO_ISOLATE_DECODE", True),
            eval_dist_timeout_s=float(_number(env, "TACO_EVAL_DIST_TIMEOUT_S", 48 * 3600.0, float)),
            model_set=env.get("TACO_MODEL_SET", "").strip().lower(),
            ui_max_side=side,
            ui_cache_entries=int(_number(env, "TACO_UI_CACHE_ENTRIES", 48)),
            ui_max_decode_pixels=int(_number(env, "TACO_UI_MAX_DECODE_PIXELS", 2 * side * side)),
            ui_concurrency=int(_number(env, "TACO_UI_CONCURRENCY", 1)),
            ui_queue=int(_number(env, "TACO_UI_QUEUE", 16)),
            ui_webfonts=_flag(env, "TACO_UI_WEBFONTS", False),
            ui_start_example=_flag(env, "TACO_UI_START_EXAMPLE", True),
            ui_prepare=_flag(env, "TACO_UI_PREPARE", True),
            clip_dir=_path(env, "TACO_CLIP_DIR"),
            minilm_dir=_path(env, "TACO_MINILM_DIR"),
            openclip_dir=_path(env, "TACO_OPENCLIP_DIR"),
            blip_dir=_path(env, "TACO_BLIP_DIR"),
            fetch_official=_flag(env, "TACO_FETCH_OFFICIAL", False),
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_LOCK = threading.Lock()
_CURRENT: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, built from the environment on first use."""
    global _CURRENT
    with _LOCK:
        if _CURRENT is None:
            _CURRENT = Settings.from_env()
        return _CURRENT


def set_settings(settings: Settings | None) -> None:
    """Install ``settings`` for the process (None: rebuild from the environment on next use)."""
    global _CURRENT
    with _LOCK:
        _CURRENT = settings


@contextlib.contextmanager
def use_settings(settings: Settings | None = None, **changes: object) -> Iterator[Settings]:
    """Run a block under ``settings`` (default: the current ones) with ``changes`` applied."""
    global _CURRENT
    with _LOCK:
        before = _CURRENT
    chosen = (settings or get_settings()).replace(**changes)
    set_settings(chosen)
    try:
        yield chosen
    finally:
        set_settings(before)
