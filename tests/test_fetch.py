"""`python -m app fetch-official`, offline: a loopback HTTP server stands in for Google Drive.

The checkpoints served are tiny TACO / Elic2022Chandelier models, so everything but gdown's Drive
page scraping runs: download to a temporary name, strict load, sha256 manifest, idempotence,
refusals and the unreachable-host message.
"""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch

from app import fetch as F
from app.cli import main as cli_main
from app.fetch import run as fetch_run
from app.hashing import sha256_file
from app.models.factory import create_model, load_config
from app.settings import Settings, use_settings

GOOD = ("lambda_0.0018.pth.tar", "lambda_0.0483.pth.tar")
_LOAD_SOURCES = F.load_sources


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                super().do_GET()

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _tiny_taco(path: Path, config: str = "taco-tiny") -> None:
    torch.manual_seed(0)
    model = create_model(load_config(config))
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, path)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    for name in GOOD:
        _tiny_taco(root / name)
    (root / "lambda_0.009.pth.tar").write_bytes(b"not a checkpoint" * 64)
    _tiny_taco(root / "lambda_0.004.pth.tar", "elic-tiny")  # loads, but not into taco-tiny
    server = _Server(root)
    yield server, root
    server.close()


@pytest.fixture
def official(tmp_path):
    with use_settings(official_dir=tmp_path / "official") as settings:
        yield settings


def _sources(tmp_path: Path, port: int, names: tuple[str, ...] = GOOD, **extra: object) -> Path:
    entry = {
        "name": "taco",
        "title": "the test checkpoints",
        "kind": "http",
        "host_label": "The test server",
        "url_template": f"http://127.0.0.1:{port}/{{name}}",
        "verify": {"kind": "official-config", "config": "taco-tiny"},
        "files": [{"name": n} for n in names],
        **extra,
    }
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"sources": [entry]}), encoding="utf-8")
    return path


def _run(capsys, *argv: str) -> tuple[int, list[str]]:
    rc = cli_main(["fetch-official", "--quiet", *argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_first_fetch_writes_files_and_manifest_then_second_run_downloads_nothing(
    tmp_path, served, official, capsys
):
    server, root = served
    sources = _sources(tmp_path, server.port)
    rc, err = _run(capsys, "--sources", str(sources))
    assert (rc, err) == (0, [])
    folder = official.official_dir
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == F.MANIFEST_FORMAT
    for name in GOOD:
        assert (folder / name).read_bytes() == (root / name).read_bytes()
        entry = manifest["files"][name]
        assert entry["sha256"] == sha256_file(folder / name)
        assert entry["verified_against"] == "app config taco-tiny"
    assert _leftovers(folder) == []
    assert len(server.requests) == 2

    rc, err = _run(capsys, "--sources", str(sources))
    assert (rc, err) == (0, [])
    assert len(server.requests) == 2  # nothing downloaded again
    assert json.loads((folder / "manifest.json").read_text()) == manifest

    # what the registry's official_checkpoints() sees: λ → file
    from app.codecs.registry import official_checkpoints

    assert len(official_checkpoints("taco-official")) == 2


def test_changed_file_fails_the_sha_check_and_is_kept_aside(tmp_path, served, official, capsys):
    server, _ = served
    sources = _sources(tmp_path, server.port)
    assert _run(capsys, "--sources", str(sources))[0] == 0
    target = official.official_dir / GOOD[0]
    target.write_bytes(target.read_bytes() + b"tampered")

    rc, err = _run(capsys, "--sources", str(sources))
    assert rc == 2
    assert len(err) == 1 and GOOD[0] in err[0] and "sha256" in err[0]
    assert not target.exists()
    assert (official.official_dir / f"{GOOD[0]}.rejected").read_bytes().endswith(b"tampered")
    assert len(server.requests) == 2

    rc, err = _run(capsys, "--sources", str(sources))  # the next run fetches it afresh
    assert (rc, err) == (0, [])
    assert len(server.requests) == 3
    assert target.is_file()


def test_unreachable_server_gives_one_line_and_exit_2(tmp_path, official, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rc, err = _run(capsys, "--sources", str(_sources(tmp_path, port)))
    assert rc == 2
    assert err == [f"error: The test server (127.0.0.1:{port}) is unreachable: "
                   "could not fetch the test checkpoints"]
    folder = official.official_dir
    assert not folder.exists() or not any(folder.iterdir())


def test_corrupt_and_mismatched_files_are_refused_and_not_left_under_their_names(
    tmp_path, served, official, capsys
):
    server, _ = served
    bad = ("lambda_0.009.pth.tar", "lambda_0.004.pth.tar")
    rc, err = _run(capsys, "--sources", str(_sources(tmp_path, server.port, GOOD + bad)))
    assert rc == 2
    assert len(err) == 2
    assert "cannot read checkpoint lambda_0.009.pth.tar" in err[0] and "refused" in err[0]
    assert "lambda_0.004.pth.tar does not match config 'taco-tiny'" in err[1]
    folder = official.official_dir
    for name in bad:
        assert not (folder / name).exists()
        assert (folder / f"{name}.rejected").is_file()
    assert _leftovers(folder) == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(GOOD)


def test_missing_file_404_is_one_line_and_the_rest_is_fetched(tmp_path, served, official, capsys):
    server, _ = served
    names = (GOOD[0], "lambda_0.015.pth.tar")
    rc, err = _run(capsys, "--sources", str(_sources(tmp_path, server.port, names)))
    assert rc == 2
    assert err == [f"error: lambda_0.015.pth.tar: HTTP 404 from 127.0.0.1:{server.port}"]
    assert (official.official_dir / GOOD[0]).is_file()
    assert _leftovers(official.official_dir) == []


def test_a_file_dropped_in_by_hand_is_verified_once_and_recorded(tmp_path, served, official,
                                                                   capsys):
    server, root = served
    official.official_dir.mkdir(parents=True)
    (official.official_dir / GOOD[0]).write_bytes((root / GOOD[0]).read_bytes())
    rc, err = _run(capsys, "--sources", str(_sources(tmp_path, server.port)))
    assert (rc, err) == (0, [])
    assert server.requests == [f"/{GOOD[1]}"]
    manifest = json.loads((official.official_dir / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(GOOD)


# --- the ELIC re-implementation's layout --------------------------------------------------------

_GROUPS = [2, 2, 4, 4, 4]


def _to_chandelier_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Elic2022Chandelier keys -> the names VincentChandelier's TestModel saves (test inverse)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("g_a", "g_s"):
            out[key] = value
        elif key.startswith("latent_codec.hyper."):
            name = key.removeprefix("latent_codec.hyper.")
            name = name.replace("matrices.", "_matrix").replace("biases.", "_bias")
            out[name.replace("factors.", "_factor")] = value  # compressai <= 1.2.6 names
        elif key.startswith("latent_codec.y.channel_context.y"):
            k = int(parts[3][1:])
            out[".".join(["cc_transforms", str(k - 1), *parts[4:]])] = value
        elif parts[3] == "y0" and parts[4] == "y":  # latent_codec.y.latent_codec.y0.y.<gc>
            out[".".join(parts[5:])] = value  # the one shared gaussian_conditional
        elif parts[4] == "context_prediction":
            out[".".join(["context_prediction", parts[3][1:], *parts[5:]])] = value
        elif parts[4] == "entropy_parameters":
            out[".".join(["ParamAggregation", parts[3][1:], *parts[5:]])] = value
    return {f"module.{k}": v for k, v in out.items()}  # saved from DataParallel


def test_chandelier_layout_loads_strictly_into_compressai(tmp_path, official, capsys):
    from compressai.models import Elic2022Chandelier

    torch.manual_seed(0)
    ref = Elic2022Chandelier(N=8, M=16, groups=_GROUPS).eval()
    theirs = _to_chandelier_layout(ref.state_dict())
    assert not any("latent_codec" in k for k in theirs)
    root = tmp_path / "served"
    root.mkdir()
    torch.save({"state_dict": theirs, "epoch": 3}, root / "elic_chandelier_lambda_0.016.pth.tar")
    torch.save({"state_dict": {"g_a.0.weight": torch.zeros(1)}}, root / "broken.pth.tar")
    server = _Server(root)
    try:
        sources = _sources(
            tmp_path, server.port, ("elic_chandelier_lambda_0.016.pth.tar", "broken.pth.tar"),
            name="elic", subdir="elic-chandelier",
            verify={"kind": "elic2022chandelier", "N": 8, "M": 16, "groups": _GROUPS},
        )
        rc, err = _run(capsys, "--sources", str(sources))
    finally:
        server.close()
    assert rc == 2
    assert len(err) == 1 and "broken.pth.tar does not match Elic2022Chandelier" in err[0]
    folder = official.official_dir / "elic-chandelier"
    assert (folder / "elic_chandelier_lambda_0.016.pth.tar").is_file()
    manifest = json.loads((official.official_dir / "manifest.json").read_text())
    assert list(manifest["files"]) == ["elic-chandelier/elic_chandelier_lambda_0.016.pth.tar"]

    mapped = F.chandelier_to_compressai(theirs, len(_GROUPS))
    fresh = Elic2022Chandelier(N=8, M=16, groups=_GROUPS).eval()
    fresh.load_state_dict(mapped, strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x)["x_hat"], ref(x)["x_hat"])


# --- sources, settings, start-up, CLIP ----------------------------------------------------------


def test_shipped_sources_file_is_valid():
    sources = {s.name: s for s in F.load_sources()}
    assert set(sources) == {"taco", "clip", "elic-chandelier"}
    taco = sources["taco"]
    assert taco.folder_id == "1zOLRtr3AMJ2KChCDjCeBicI871Pzw28K"
    assert [f.lmbda for f in taco.files] == load_config("taco-official")["lmbda_ladder"]
    assert taco.verify == {"kind": "official-config", "config": "taco-official"}
    assert all(f.file_id for f in sources["elic-chandelier"].files)
    assert "no licence" in sources["elic-chandelier"].provenance["licence"]
    assert {s.name for s in sources.values() if s.startup} == {"taco", "clip"}


def test_setting_and_startup_hook(tmp_path, served, monkeypatch, capsys):
    assert Settings.from_env({"TACO_FETCH_OFFICIAL": "1"}).fetch_official is True
    assert Settings.from_env({}).fetch_official is False
    off = Settings.from_env({}).replace(official_dir=tmp_path / "off")
    assert F.fetch_on_startup(off) is None
    assert not (tmp_path / "off").exists()

    server, _ = served
    path = _sources(tmp_path, server.port, (GOOD[0], "lambda_0.015.pth.tar"), startup=True)
    monkeypatch.setattr(fetch_run, "load_sources", lambda p=None: _LOAD_SOURCES(path))
    on = off.replace(fetch_official=True, official_dir=tmp_path / "on")
    report = F.fetch_on_startup(on)
    assert report is not None and report.downloaded == [GOOD[0]]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"fetch-official: lambda_0.015.pth.tar: HTTP 404 from 127.0.0.1:{server.port}"]

    monkeypatch.setattr(fetch_run, "load_sources", lambda p=None: 1 / 0)  # a bug must not stop the app
    assert F.fetch_on_startup(on) is None
    assert capsys.readouterr().err.startswith("fetch-official: ZeroDivisionError")


def test_clip_offline_is_one_line(tmp_path, official, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with use_settings(clip_dir=None):
        rc, err = _run(capsys, "--only", "clip")
    assert rc == 2
    assert err == ["error: The Hugging Face hub (huggingface.co) is unreachable: "
                   "could not fetch the CLIP ViT-B/32 text model"]


def test_cli_lists_sources_and_rejects_unknown_names(capsys):
    assert cli_main(["fetch-official", "--list"]) == 0
    out = capsys.readouterr().out
    assert "taco:" in out and "elic-chandelier:" in out and "no licence" in out
    assert cli_main(["fetch-official", "--only", "nope"]) == 2
    assert "unknown source 'nope'" in capsys.readouterr().err
