"""Worker of the cross-machine matrix (tests/test_portable.py): one process = one simulated CPU.

The caller sets ``ONEDNN_MAX_CPU_ISA`` (SSE41, AVX, AVX2, or unset) before the process starts, as
oneDNN reads it once; thread counts vary inside the process.

    python tests/portable_worker.py encode DIR LABEL THREADS  # writes DIR/<case>@<LABEL>-t<T>.taco
                                                              # and the encoder's own decode (.npy)
    python tests/portable_worker.py decode DIR LABEL   # decodes every .taco in DIR at 1/2/4
                                                       # threads, writes DIR/report-<LABEL>.json

Cases: the embedded TACO and ELIC at three λ, and official-size TACO and ELIC with random weights
(DIR/official/*.pth.tar, written by the test); the image is a crop of a shipped asset photo.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

THREADS = (1, 2, 4)
EMBEDDED_LMBDAS = (0.0018, 0.0093, 0.0483)


def cases(folder: Path) -> list[tuple[str, str, str | None, float | None, tuple[int, int]]]:
    """(case id, codec name, checkpoint, λ, crop size)."""
    out: list[tuple[str, str, str | None, float | None, tuple[int, int]]] = []
    for name in ("taco", "elic"):
        for lam in EMBEDDED_LMBDAS:
            out.append((f"{name}-{lam:g}", name, None, lam, (64, 128)))
    for name in ("taco-official", "elic-official"):
        ckpt = folder / "official" / f"{name}" / "lambda_0.0008.pth.tar"
        if ckpt.is_file():
            out.append((name, name, str(ckpt), None, (64, 64)))
    return out


def image(size: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(Image.open(ROOT / "assets" / "astronaut.png").convert("RGB"))
    h, w = size
    return np.ascontiguousarray(arr[100 : 100 + h, 150 : 150 + w])


def load(name: str, checkpoint: str | None):
    from app.codecs import load_codec

    codec = load_codec(name, checkpoint=checkpoint)
    if checkpoint is not None and codec.arch == "taco":  # no CLIP offline: fixed token states
        states = torch.randn((1, 38, codec.cfg["text_dim"]), generator=torch.Generator().manual_seed(7))
        codec.text_states = lambda caption: states  # type: ignore[method-assign]
    return codec


def encode(folder: Path, label: str, threads: int) -> None:
    for case, name, ckpt, lam, size in cases(folder):
        codec = load(name, ckpt)
        arr = image(size)
        for t in (threads,):
            torch.set_num_threads(t)
            data = codec.compress(arr, caption="an astronaut in a white suit", lmbda=lam)
            stem = f"{case}@{label}-t{t}"
            (folder / f"{stem}.taco").write_bytes(data)
            np.save(folder / f"{stem}.npy", np.asarray(codec.decompress(data)))


def decode(folder: Path, label: str) -> None:
    from app.codecs import decompress, load_codec, read_header
    from app.errors import TacoError

    report: dict[str, object] = {"label": label, "files": {}, "tables": {}}
    checkpoints = {name: ckpt for _, name, ckpt, _, _ in cases(folder)}
    for path in sorted(folder.glob("*.taco")):
        header = read_header(path.read_bytes())
        load_codec(header.model_id, checkpoint=checkpoints.get(header.model_id))
        reference = np.load(path.with_suffix(".npy"))
        for t in THREADS:
            torch.set_num_threads(t)
            key = f"{path.stem}>{label}-t{t}"
            try:
                got = np.asarray(decompress(path.read_bytes()))
            except TacoError as exc:
                report["files"][key] = {"error": str(exc)}  # type: ignore[index]
                continue
            diff = np.abs(got.astype(np.int16) - reference.astype(np.int16))
            report["files"][key] = {  # type: ignore[index]
                "max_diff": int(diff.max()),
                "frac_diff": float((diff > 0).mean()),
            }
    for _, name, ckpt, _, _ in cases(folder):
        codec = load_codec(name, checkpoint=ckpt)
        model = codec._model(codec._variants[0])
        report["tables"][name] = model.coder("portable")[1].crc  # type: ignore[index]
    (folder / f"report-{label}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    mode, folder, label = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if mode == "encode":
        encode(folder, label, int(sys.argv[4]))
    else:
        decode(folder, label)
