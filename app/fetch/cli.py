"""``python -m app fetch-official`` (``main(argv)``)."""

from __future__ import annotations

import argparse
import sys

from app.errors import ConfigError
from app.fetch.run import EXIT_FAILED, EXIT_OK, fetch
from app.fetch.sources import load_sources
from app.settings import get_settings

# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app fetch-official",
        description="Download the official TACO checkpoints, the CLIP text model and the ELIC "
        "re-implementation's checkpoints; verify them and record their sha256.",
    )
    p.add_argument("--only", help="comma-separated source names (default: all): "
                   "taco, clip, elic-chandelier")
    p.add_argument("--sources", help="a sources JSON file (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.add_argument("--list", action="store_true", help="list the sources and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    sources = load_sources(args.sources)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {s.name for s in sources}]
        if unknown:
            raise ConfigError(f"unknown source {unknown[0]!r}; known: "
                              + ", ".join(s.name for s in sources))
        sources = [s for s in sources if s.name in wanted]
    if args.list:
        for s in sources:
            licence = s.provenance.get("licence", "unknown")
            print(f"{s.name}: {s.title} ({s.host}; {len(s.files) or 1} file(s); licence: {licence})")
        return EXIT_OK
    report = fetch(sources, quiet=args.quiet)
    for line in report.problems:
        print(f"error: {line}", file=sys.stderr)
    if not args.quiet:
        official = get_settings().official_dir
        print(f"{len(report.downloaded)} downloaded, {len(report.present)} already present "
              f"({official}); {len(report.problems)} problem(s)")
    return EXIT_OK if report.ok else EXIT_FAILED
