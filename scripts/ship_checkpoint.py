"""Copy a trained run's weights into checkpoints/ (fp16 safetensors) and record it in the manifest.

    python scripts/ship_checkpoint.py runs/elic-small --hardware "2-core AMD Zen 4 CPU, 1 thread"

Reads ``RUN/state.pt`` (or ``RUN/<model>.safetensors``), ``RUN/train_config.json`` and
``RUN/log.csv``; writes ``checkpoints/<model>.safetensors`` and the manifest entry
``<model>``: config, λ range, steps, wall time, hardware, data, sha256. Kodak results are added
later with ``--kodak-json`` (an eval ``summary.json``).

A model trained in phases (a run started with ``init_from`` another run's ``state.pt``) lists the
earlier runs with ``--prior RUN`` (repeatable, oldest first): the entry then has ``phases``
(steps, minutes, lr and init of each run) and ``steps`` / ``train_minutes`` are their totals.
``--prior-manifest NAME`` puts the ``phases`` already recorded for manifest entry NAME first (for
a run continued from the shipped weights, whose earlier run folders no longer exist); an entry
without ``phases`` counts as one phase with its ``steps`` and ``train_minutes``.

The Kodak results of the previous entry are kept only when the weights did not change (same
sha256); new weights get theirs with ``--kodak-json`` once measured: ``--attach-kodak`` then only
adds them to the existing entry (checked against the file's sha256) without rewriting the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from app.hashing import sha256_file
from app.models.factory import create_model, load_config, save_weights

ROOT = Path(__file__).resolve().parents[1]


def phase(run: Path, state: dict | None = None) -> dict:
    """Steps, minutes, learning rate and initialisation of one training run."""
    if state is None:
        state = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    tcfg = json.loads((run / "train_config.json").read_text())
    init = tcfg.get("init_from")
    return {"run": run.name, "steps": int(state["step"]),
            "minutes": round(float(state.get("train_seconds", 0.0)) / 60, 1),
            "lr": tcfg.get("lr"), "lr_milestones": tcfg.get("lr_milestones"), "k_P": tcfg.get("k_P"),
            "init_from": Path(init).parent.name + "/" + Path(init).name if init else None}


def prior_manifest_phases(manifest: dict, name: str) -> list[dict]:
    """The phases recorded for manifest entry ``name`` (one phase if it lists none)."""
    if name not in manifest:
        raise SystemExit(f"--prior-manifest {name}: no such manifest entry")
    old = manifest[name]
    if old.get("phases"):
        return [dict(p) for p in old["phases"]]
    return [{"run": f"{name} (shipped {old.get('sha256', '?')[:16]})", "steps": int(old["steps"]),
             "minutes": float(old.get("train_minutes", 0.0)), "lr": None, "lr_milestones": None,
             "k_P": None, "init_from": None}]


def attach_kodak(manifest: dict, manifest_path: Path, name: str, folder: Path,
                 kodak_json: Path | None) -> int:
    """Add the Kodak summary to the existing entry ``name`` whose file still has its sha256."""
    if kodak_json is None:
        raise SystemExit("--attach-kodak needs --kodak-json")
    entry = manifest.get(name)
    if entry is None:
        raise SystemExit(f"no manifest entry {name!r} to attach Kodak results to")
    if sha256_file(folder / entry["file"]) != entry["sha256"]:
        raise SystemExit(f"{entry['file']} does not match its manifest sha256")
    entry["kodak"] = json.loads(kodak_json.read_text()).get("codecs")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"attached {kodak_json} to manifest entry {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--hardware", required=True)
    ap.add_argument("--notes", default="")
    ap.add_argument("--kodak-json", type=Path, default=None, help="eval summary.json to attach")
    ap.add_argument("--prior", type=Path, action="append", default=[],
                    help="an earlier training phase of the same weights (oldest first; repeatable)")
    ap.add_argument("--prior-manifest", default=None, metavar="NAME",
                    help="start the phases with those recorded for manifest entry NAME")
    ap.add_argument("--attach-kodak", action="store_true",
                    help="only add --kodak-json to the existing entry of RUN's model")
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints",
                    help="checkpoint folder holding manifest.json (default: the repository's)")
    args = ap.parse_args(argv)
    manifest_path = args.checkpoints / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    tcfg = json.loads((args.run / "train_config.json").read_text())
    name = tcfg["model"] if isinstance(tcfg["model"], str) else tcfg["model"]["name"]
    if args.attach_kodak:
        return attach_kodak(manifest, manifest_path, name, args.checkpoints, args.kodak_json)
    cfg = load_config(name)
    model = create_model(cfg)
    state = torch.load(args.run / "state.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    phases = prior_manifest_phases(manifest, args.prior_manifest) if args.prior_manifest else []
    phases += [phase(run) for run in [*args.prior, args.run]]
    phases[-1] = phase(args.run, state)
    steps = sum(p["steps"] for p in phases)
    wall_min = sum(p["minutes"] for p in phases)
    out = args.checkpoints / f"{name}.safetensors"
    save_weights(model, out, half=True, extra={"steps": str(steps), "notes": args.notes})

    entry = {
        "file": out.name,
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "kind": "codec",
        "config": f"app/configs/{name}.json",
        "lmbda_range": cfg.get("lmbda_range"),
        "steps": steps,
        "train_minutes": round(wall_min, 1),
        "hardware": args.hardware,
        "train_config": {k: v for k, v in tcfg.items() if not k.startswith("_")},
        "data": "training folders of ../shared/data: coco_train2017 (130, human captions), "
        "coco_val2017_train (196, human captions), train_photos (619, no captions); "
        "4 held out for validation. Never Kodak or the 208 coco_val2017 evaluation images.",
        "notes": args.notes,
    }
    if len(phases) > 1:
        entry["phases"] = phases
    if args.kodak_json:
        entry["kodak"] = json.loads(args.kodak_json.read_text()).get("codecs")
    old = manifest.get(name, {})
    if "kodak" in old and "kodak" not in entry and old.get("sha256") == entry["sha256"]:
        entry["kodak"] = old["kodak"]  # measured with these very weights
    manifest[name] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out.name} ({entry['bytes']:,} bytes, {steps} steps, "
          f"{wall_min:.1f} min) sha256 {entry['sha256'][:16]}…")
    return 0


if __name__ == "__main__":
    sys.exit(main())
