"""Weights load safely: safetensors or ``torch.load(weights_only=True)``, pickles only through an
allow-list unpickler, shipped checkpoints checked against their manifest SHA-256, and no upload or
temp file kept past its time.

The source checks walk the AST of every Python file of the app (``app/``, ``app.py``,
``scripts/``), so comments and strings never trigger them and ``model.eval()`` is not ``eval``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("scripts").glob("*.py"), ROOT / "app.py"]
)
SOURCES = [p for p in SOURCES if p.is_file()]

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
DANGEROUS_BUILTINS = {"eval", "exec", "compile", "__import__"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _dotted(node: ast.AST) -> str:
    """'torch.load' for Attribute(Name('torch'), 'load'); '' when not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(source: str, path: str = "<src>") -> list[Finding]:
    """Every unsafe loading / code-execution pattern in one Python source."""
    tree = ast.parse(source)
    found: list[Finding] = []
    aliases: dict[str, str] = {}  # local name -> "module.attr" for `from X import Y as Z`

    def add(node: ast.AST, what: str) -> None:
        found.append(Finding(path, getattr(node, "lineno", 0), what))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                if root in PICKLE_MODULES and a.name in ("load", "loads", "Unpickler", "open"):
                    add(node, f"from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {_dotted(b) for b in node.bases}
            if bases & {"pickle.Unpickler", "_pickle.Unpickler", "Unpickler"}:
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if "find_class" not in methods:
                    add(node, f"class {node.name}(Unpickler) without an allow-list find_class")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, tail = name.partition(".")
        full = f"{aliases.get(head, head)}.{tail}" if tail else aliases.get(head, head)
        module = full.rsplit(".", 1)[0] if "." in full else ""
        attr = full.rsplit(".", 1)[-1]
        if isinstance(node.func, ast.Name) and node.func.id in DANGEROUS_BUILTINS:
            add(node, f"builtin {node.func.id}()")
        if module.split(".")[0] in PICKLE_MODULES and attr in ("load", "loads", "open", "Unpickler"):
            add(node, f"{full}()")
        if full == "torch.load" and not _is_true(_kw(node, "weights_only")):
            add(node, "torch.load() without weights_only=True")
        if full in ("torch.jit.load", "torch.hub.load", "torch.package.PackageImporter"):
            add(node, f"{full}() runs code from the file")
        if full in ("numpy.load", "np.load") and _is_true(_kw(node, "allow_pickle")):
            add(node, "numpy.load(allow_pickle=True)")
        if full == "yaml.unsafe_load" or (full == "yaml.load" and _kw(node, "Loader") is None):
            add(node, f"{full}() without a safe Loader")
        if _is_true(_kw(node, "trust_remote_code")):
            add(node, "trust_remote_code=True")
        if full.startswith("subprocess.") and _is_true(_kw(node, "shell")):
            add(node, f"{full}(shell=True)")
        if full in ("os.system", "os.popen"):
            add(node, f"{full}()")
        if attr == "from_pretrained" and isinstance(_kw(node, "use_safetensors"), ast.Constant):
            value = _kw(node, "use_safetensors")
            if isinstance(value, ast.Constant) and value.value is False:
                add(node, "from_pretrained(use_safetensors=False)")
    return found


# ------------------------------------------------------------------------------- source scan


def test_the_scanner_catches_what_it_should() -> None:
    bad = textwrap.dedent(
        """
        import pickle, torch, yaml, os, subprocess
        import numpy as np
        from pickle import loads as L
        from transformers import AutoModel
        class U(pickle.Unpickler):
            pass
        pickle.load(f); L(b); torch.load(p); torch.load(p, weights_only=False)
        torch.jit.load(p); np.load(p, allow_pickle=True); yaml.load(s); eval("1"); exec("x")
        AutoModel.from_pretrained("x", trust_remote_code=True); os.system("ls")
        subprocess.run("ls", shell=True)
        """
    )
    whats = [f.what for f in scan_source(bad)]
    for expected in (
        "from pickle import loads",
        "without an allow-list find_class",
        "pickle.load()",
        "pickle.loads()",
        "torch.load() without weights_only=True",
        "torch.jit.load() runs code from the file",
        "numpy.load(allow_pickle=True)",
        "yaml.load() without a safe Loader",
        "builtin eval()",
        "builtin exec()",
        "trust_remote_code=True",
        "os.system()",
        "subprocess.run(shell=True)",
    ):
        assert any(expected in w for w in whats), (expected, whats)
    assert sum("torch.load()" in w for w in whats) == 2
    good = textwrap.dedent(
        """
        import pickle, torch, re
        class Safe(pickle.Unpickler):
            def find_class(self, module, name):
                raise pickle.UnpicklingError(name)
        model.eval(); re.compile("x"); torch.load(p, map_location="cpu", weights_only=True)
        Safe(f).load(); yaml.safe_load(s)
        """
    )
    assert scan_source(good) == []


def test_sources_were_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"app/codecs/learned.py", "app/bitstream.py", "app/images.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=[p.relative_to(ROOT).as_posix() for p in SOURCES])
def test_no_unsafe_loading_or_code_execution(path: Path) -> None:
    findings = scan_source(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not findings, "\n".join(map(str, findings))


def test_lpips_converter_reads_pickles_only_through_the_allow_list() -> None:
    script = ROOT / "scripts" / "convert_lpips.py"
    tree = ast.parse(script.read_text(encoding="utf-8"))
    unpicklers = [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and _dotted(n.func).split(".")[-1].endswith("Unpickler")
    ]
    assert unpicklers and all(_dotted(n.func) == "SafeUnpickler" for n in unpicklers)


# ------------------------------------------------------------------------------- the allow-list unpickler


class _Payload:
    """Unpickling this opens (creates) a marker file: the observable side effect of an exploit."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_safe_unpickler_refuses_code_before_running_it(tmp_path: Path) -> None:
    from app import lpips_offline

    marker = tmp_path / "pwned"
    evil = pickle.dumps({"AlexNet_0": _Payload(marker)})
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        lpips_offline.SafeUnpickler(io.BytesIO(evil)).load()
    assert not marker.exists()
    ckpt = tmp_path / "alexnet.ckpt"
    ckpt.write_bytes(evil)
    with pytest.raises(pickle.UnpicklingError):
        lpips_offline.read_flax_checkpoint(ckpt)
    assert not marker.exists()


def test_safe_unpickler_still_reads_plain_arrays() -> None:
    import numpy as np

    from app import lpips_offline

    blob = pickle.dumps({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    out = lpips_offline.SafeUnpickler(io.BytesIO(blob)).load()
    assert out["w"].shape == (2, 3)


# ------------------------------------------------------------------------------- checkpoints


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_checkpoints_match_the_manifest() -> None:
    manifest = ROOT / "checkpoints" / "manifest.json"
    if not manifest.is_file():
        pytest.skip("no checkpoints/manifest.json")
    entries = json.loads(manifest.read_text())
    assert entries, "empty manifest"
    for key, entry in entries.items():
        path = ROOT / "checkpoints" / entry["file"]
        if not path.is_file():
            continue  # not trained / converted yet: the loaders say so (MissingModelError)
        assert path.suffix == ".safetensors", f"{key}: {path.name} is not safetensors"
        assert _sha256(path) == entry["sha256"], f"{key}: {path.name} differs from the manifest"
        if "bytes" in entry:
            assert path.stat().st_size == entry["bytes"]


def test_only_safetensors_weights_are_shipped() -> None:
    folder = ROOT / "checkpoints"
    if not folder.is_dir():
        pytest.skip("no checkpoints/")
    pickled = {".pt", ".pth", ".tar", ".bin", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib"}
    shipped = [p for p in folder.iterdir() if p.is_file()]  # official/ is the user's, git-ignored
    bad = [p.name for p in shipped if p.suffix.lower() in pickled]
    assert not bad, f"pickle-based weights in checkpoints/: {bad}"


def _run_isolated(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (the settings come from its environment)."""
    env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT)}
    env.pop("TACO_ALLOW_RANDOM", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def _fake_checkpoints(folder: Path, tamper: bool) -> None:
    good = b"pretend these are the trained weights"
    (folder / "taco-small.safetensors").write_bytes(good + (b" (one byte changed)" if tamper else b""))
    (folder / "elic-small.safetensors").write_bytes(good)
    digest = hashlib.sha256(good).hexdigest()
    manifest = {
        "taco-small": {"file": "taco-small.safetensors", "sha256": digest},
        "elic-small": {"file": "elic-small.safetensors", "sha256": digest},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_tampered_embedded_checkpoint_is_refused(tmp_path: Path) -> None:
    """A copy of the weights that differs from manifest.json never loads (TACO_CHECKPOINT_DIR set
    in the environment of a fresh interpreter, as a user would)."""
    _fake_checkpoints(tmp_path, tamper=True)
    proc = _run_isolated(
        """
        from app.codecs import load_codec
        from app.errors import MissingModelError
        try:
            load_codec("taco")
            print("LOADED")
        except MissingModelError as exc:
            print("REFUSED", exc)
        """,
        {"TACO_CHECKPOINT_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("REFUSED") and "does not match" in proc.stdout, proc.stdout
    assert "\n" not in proc.stdout.strip()


def test_checkpoint_matching_the_manifest_but_not_safetensors_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from app.codecs import registry
    from app.errors import TacoError
    from app.settings import use_settings

    _fake_checkpoints(tmp_path, tamper=False)
    monkeypatch.setattr(registry, "_CACHE", {})
    with use_settings(checkpoint_dir=tmp_path):
        c = registry.load_codec("elic")  # the hash matches: accepted ...
        with pytest.raises(TacoError) as info:  # ... but the bytes are not safetensors
            c.compress(np.zeros((8, 8, 3), np.uint8))
    assert "\n" not in str(info.value) and "elic-small.safetensors" in str(info.value)


def test_malicious_official_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    """A pickled `lambda_*.pth.tar` that runs code on load: torch.load(weights_only=True) refuses."""
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "lambda_0.004.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, evil)
    legacy = tmp_path / "lambda_0.009.pth.tar"
    legacy.write_bytes(pickle.dumps(_Payload(marker), protocol=2))  # pre-zip format
    from app.errors import TacoError
    from app.models.factory import load_official_checkpoint

    for path in (evil, legacy):
        with pytest.raises(TacoError) as info:
            load_official_checkpoint(path, "taco-official")
        assert "\n" not in str(info.value) and path.name in str(info.value)
        assert not marker.exists(), f"{path.name} ran code while loading"


# ------------------------------------------------------------------------------- temp files


def test_uploads_and_outputs_are_swept() -> None:
    """Gradio's upload/output cache is cleaned (delete_cache) and our .taco downloads pruned."""
    from app.ui import layout
    from app.ui import present as P
    from app.ui.model_sets import TINY_SET

    frequency, age = layout.DELETE_CACHE
    assert 0 < frequency <= 3600 and 0 < age <= 24 * 3600
    demo = layout.build_demo(model_sets={TINY_SET.label: TINY_SET}, examples=[])
    try:
        assert demo.delete_cache == layout.DELETE_CACHE
    finally:
        demo.close()
    assert 0 < P.DOWNLOAD_MAX_AGE_S <= 24 * 3600
    assert Path(P.DOWNLOAD_DIR).is_relative_to(Path(__import__("tempfile").gettempdir()))


def test_download_folder_is_pruned(tmp_path: Path) -> None:
    from app.ui import present as P

    old = tmp_path / "abc" / "x.taco"
    old.parent.mkdir()
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    fresh = tmp_path / "def" / "y.taco"
    fresh.parent.mkdir()
    fresh.write_bytes(b"y")
    P.prune_downloads(tmp_path, P.DOWNLOAD_MAX_AGE_S)
    assert not old.exists() and fresh.exists()


def test_upload_size_is_bounded_at_launch() -> None:
    from app.ui import layout

    limit = layout.launch_kwargs().get("max_file_size")
    assert limit is not None
