#!/usr/bin/env python
"""Load test: the demo on 127.0.0.1 with the tiny random models, hammered by gradio_client.

The server runs in a child process (``--serve``), so its own peak RSS (``VmHWM``) is measured
without the clients in it. The parent then runs ``--clients`` concurrent gradio_client clients,
each sending ``--requests`` calls to the public ``/compare`` endpoint (a varied caption and
slider position per call, so the result cache does not answer them), then a few hostile uploads
from tests/hostile.py, and checks the server still answers afterwards.

Recorded: errors (must be 0), latency p50 / p95 / max, throughput, server peak RSS, the queue
bound (``max_size``) and the most requests waiting at once. Bounded in count and in time
(``--max-seconds``; the server also exits on its own), and nothing listens beyond 127.0.0.1.

    .venv/bin/python scripts/load_test.py                      # 8 clients x 20 requests
    .venv/bin/python scripts/load_test.py --out load.md        # also write the Markdown snippet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"  # tests/hostile.py (the hostile uploads) is not part of the installed package
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

READY = "LOAD_TEST_SERVER_READY"
HOSTILE_KINDS = ("zero_bytes", "text_as_png", "png_bomb_valid_data", "tiff_float_nonfinite", "svg")


# ------------------------------------------------------------------------------------ server


def serve(max_seconds: float, torch_threads: int | None) -> int:
    """Child process: launch the demo on 127.0.0.1, print its URL, exit by itself."""
    os.environ["TACO_MODEL_SET"] = "tiny"
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    from app.settings import get_settings
    from app.ui import layout
    from app.ui.model_sets import TINY_SET

    demo = layout.build_demo(model_sets={TINY_SET.label: TINY_SET})
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True
    )
    print(READY, json.dumps({"url": url, "label": TINY_SET.label, "queue_max": get_settings().ui_queue,
                      "concurrency": get_settings().ui_concurrency}), flush=True)
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    try:
        while time.monotonic() < deadline and os.getppid() == parent:
            line = sys.stdin.readline()  # the parent closes stdin (or writes "stop") to end us
            if not line or line.strip() == "stop":
                break
    finally:
        demo.close()
    return 0


def _vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------------ clients


@dataclass
class Record:
    client: int
    start: float
    end: float
    ok: bool
    error: str = ""


@dataclass
class Results:
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rec: Record) -> None:
        with self.lock:
            self.records.append(rec)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def client_loop(
    idx: int, url: str, label: str, image: str, n: int, stop_at: float, out: Results
) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    for j in range(n):
        if time.monotonic() > stop_at:
            break
        t0 = time.monotonic()
        try:
            res = client.predict(
                handle_file(image),
                f"load test client {idx} request {j}: a photo",  # a new caption every call
                float((idx * 20 + j * 7) % 101),  # and a new slider position
                False,
                0.3,
                label,
                False,
                "TACO | ELIC",
                "standard",
                api_name="/compare",
            )
            ok = isinstance(res, tuple | list) and len(res) >= 8
            out.add(Record(idx, t0, time.monotonic(), ok, "" if ok else f"bad result {res!r:.80}"))
        except Exception as exc:  # noqa: BLE001 - every failure is a data point
            out.add(Record(idx, t0, time.monotonic(), False, _one_line(exc)))


def hostile_uploads(url: str, label: str, workdir: Path) -> list[tuple[str, str]]:
    """Each hostile file must come back as an error (not a hang, not a dead server)."""
    import hostile
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    rows = []
    workdir = workdir / "hostile"  # own folder: corpus names (photo.png, ...) must not clobber ours
    workdir.mkdir(exist_ok=True)
    for kind in HOSTILE_KINDS:
        case = hostile.BY_KIND[kind]
        path = workdir / case.filename
        path.write_bytes(case.data())
        try:
            client.predict(handle_file(str(path)), "x", 50, False, 0.3, label, False,
                           "TACO | ELIC", "standard", api_name="/compare")
            rows.append((kind, "accepted (unexpected)"))
        except Exception as exc:  # noqa: BLE001
            rows.append((kind, _one_line(exc)))
    return rows


def path_probe(url: str, label: str) -> str:
    """Ask /compare for a server-side path that was never uploaded (/etc/passwd) over raw HTTP:
    Gradio must refuse to hand it to the handler."""
    import httpx

    args = [{"path": "/etc/passwd", "orig_name": "passwd.png", "meta": {"_type": "gradio.FileData"}},
            "x", 50, False, 0.3, label, False, "TACO | ELIC", "standard"]
    base = url.rstrip("/")
    try:
        r = httpx.post(f"{base}/gradio_api/call/compare", json={"data": args}, timeout=30)
        if r.status_code != 200:
            try:
                detail = str(r.json().get("detail", ""))[:120]
            except ValueError:
                detail = ""
            return f"refused at submit (HTTP {r.status_code}: {detail})"
        event = r.json()["event_id"]
        with httpx.stream("GET", f"{base}/gradio_api/call/compare/{event}", timeout=60) as s:
            text = "".join(s.iter_text())
    except Exception as exc:  # noqa: BLE001
        return f"refused ({_one_line(exc)})"
    if "event: error" in text:
        detail = text.split("event: error", 1)[1].split("data:", 1)[-1].strip().splitlines()[0]
        return f"refused: {detail[:120]}"
    return "ACCEPTED (the handler received a server path)"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def _max_waiting(records: list[Record], concurrency: int) -> int:
    events = sorted([(r.start, 1) for r in records] + [(r.end, -1) for r in records])
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return max(0, peak - concurrency)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    t_start = time.monotonic()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--max-seconds",
           str(args.max_seconds + 60)]
    if args.torch_threads:
        cmd += ["--torch-threads", str(args.torch_threads)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}  # app: the editable install
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:  # skip whatever Gradio prints before our line
            if line.startswith(READY):
                info = json.loads(line[len(READY):])
                break
        else:
            raise SystemExit(f"the server exited early (code {server.wait()})")
        url, label = info["url"], info["label"]
        with tempfile.TemporaryDirectory() as tmp:
            img = Path(tmp) / "photo.png"
            src = ROOT / "assets" / "astronaut.png"
            if src.is_file():
                with Image.open(src) as im:
                    im.convert("RGB").resize((args.size, args.size)).save(img)
            else:
                rng = np.random.default_rng(0)
                Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), np.uint8)).save(img)
            # warm-up: load the models once so the first client does not carry it
            warm = Results()
            client_loop(-1, url, label, str(img), 1, time.monotonic() + 300, warm)
            warm_s = warm.records[0].end - warm.records[0].start if warm.records else float("nan")
            results = Results()
            stop_at = time.monotonic() + args.max_seconds
            t0 = time.monotonic()
            threads = [
                threading.Thread(target=client_loop,
                                 args=(i, url, label, str(img), args.requests, stop_at, results))
                for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(1.0, stop_at - time.monotonic() + 120))
            wall = time.monotonic() - t0
            hostile_rows = hostile_uploads(url, label, Path(tmp)) if not args.no_hostile else []
            if not args.no_hostile:
                hostile_rows.append(("server path /etc/passwd (raw HTTP)", path_probe(url, label)))
            after = Results()
            client_loop(-2, url, label, str(img), 1, time.monotonic() + 120, after)
            alive = bool(after.records and after.records[0].ok)
            after_error = after.records[0].error if after.records else "no answer"
        peak = _vm_hwm(server.pid)
    finally:
        try:
            if server.stdin:
                server.stdin.write("stop\n")
                server.stdin.close()
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001
            server.kill()

    recs = results.records
    lat = [r.end - r.start for r in recs if r.ok]
    errors = [r for r in recs if not r.ok]
    expected = args.clients * args.requests
    md = [
        f"Load test: {args.clients} gradio_client clients × {args.requests} requests to `/compare` "
        f"(tiny random models, {args.size}×{args.size} PNG, new caption and slider position per "
        f"call, server on 127.0.0.1 in its own process).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| requests completed / sent | {len(recs) - len(errors)} / {expected} |",
        f"| errors | {len(errors)} |",
        f"| latency p50 / p95 / max | {_pct(lat, 50):.2f} s / {_pct(lat, 95):.2f} s / "
        f"{max(lat, default=float('nan')):.2f} s |",
        f"| throughput | {len(lat) / wall:.2f} requests/s over {wall:.0f} s |",
        f"| warm-up request (models load) | {warm_s:.1f} s |",
        f"| server peak RSS (VmHWM) | {peak / 2**20:.0f} MB |",
        f"| queue bound (`max_size`) / concurrency limit | {info['queue_max']} / {info['concurrency']} |",
        f"| most requests waiting at once | {_max_waiting(recs, info['concurrency'])} |",
        f"| hostile uploads answered with an error | "
        f"{sum(not r[1].lower().startswith('accepted') for r in hostile_rows)} / {len(hostile_rows)} |",
        f"| server answers normally afterwards | {'yes' if alive else 'NO: ' + after_error} |",
        f"| host | {platform.machine()}, {os.cpu_count()} CPUs (shared), torch threads "
        f"{args.torch_threads or 'default'} |",
    ]
    if errors:
        md += ["", "Errors (first 5):", *[f"- client {r.client}: {r.error}" for r in errors[:5]]]
    if hostile_rows:
        md += ["", "Hostile uploads:", *[f"- `{k}` → {msg}" for k, msg in hostile_rows]]
    md += ["", f"_`scripts/load_test.py` ran in {time.monotonic() - t_start:.0f} s._"]
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    hostile_ok = all(not r[1].lower().startswith("accepted") for r in hostile_rows)
    ok = not errors and len(recs) == expected and alive and hostile_ok
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--size", type=int, default=256, help="side of the test image (px)")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="stop sending after this long (the server exits 60 s later)")
    parser.add_argument("--torch-threads", type=int, default=0, help="server torch threads (0: default)")
    parser.add_argument("--no-hostile", action="store_true", help="skip the hostile uploads")
    parser.add_argument("--out", type=Path, help="also write the Markdown snippet here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.max_seconds, args.torch_threads or None)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
