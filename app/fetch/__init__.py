"""``python -m app fetch-official``: download the paper's weights, verify them, record them.

What is fetched is data, in ``app/fetch/sources.json`` (``--sources`` reads another file):

- ``taco``: the authors' six ``lambda_*.pth.tar`` TACO checkpoints (a Google Drive folder linked
  from the official repository) into ``Settings.official_dir``, where the registry finds them.
- ``clip``: the CLIP ViT-B/32 text model into the Hugging Face cache (TACO's text encoder).
- ``elic-chandelier``: the six checkpoints of an unofficial ELIC re-implementation (no official
  ELIC weights exist) into ``<official_dir>/elic-chandelier/``, a folder the codec registry does
  not read; they are verified against ``compressai.models.Elic2022Chandelier`` only.

Every checkpoint is downloaded to a hidden ``.part`` name, loaded strictly into the model it is
meant for, and only then renamed to its final name. Its SHA-256 goes into
``<official_dir>/manifest.json`` on first fetch; later runs compare the file on disk with it and
download nothing when it matches. A file that fails either check is moved aside to
``<name>.rejected`` (never deleted) with a one-line error. A source that cannot be reached gives
one line saying so. The exit status is 0 when everything is in place, 2 otherwise.

Drive access goes through a :class:`Downloader`: :class:`GdownDownloader` (the real one) or
:class:`HttpDownloader` (a plain HTTP GET from a URL template, for mirrors and for the tests).

* :mod:`app.fetch.sources` — the sources file and its records;
* :mod:`app.fetch.downloaders` — gdown and plain-HTTP downloaders;
* :mod:`app.fetch.verify` — strict loading into the target model (and the ELIC key renames);
* :mod:`app.fetch.manifest` — the local manifest of what was fetched;
* :mod:`app.fetch.run` — fetching every source, and the Space's start-up hook;
* :mod:`app.fetch.cli` — ``main(argv)``.
"""

from __future__ import annotations

from app.fetch.cli import main
from app.fetch.downloaders import Downloader, GdownDownloader, HttpDownloader
from app.fetch.manifest import MANIFEST_FORMAT
from app.fetch.run import FetchReport, fetch, fetch_on_startup
from app.fetch.sources import DEFAULT_SOURCES, SourceUnreachable, load_sources
from app.fetch.verify import chandelier_to_compressai

__all__ = [
    "DEFAULT_SOURCES",
    "MANIFEST_FORMAT",
    "Downloader",
    "FetchReport",
    "GdownDownloader",
    "HttpDownloader",
    "SourceUnreachable",
    "chandelier_to_compressai",
    "fetch",
    "fetch_on_startup",
    "load_sources",
    "main",
]
