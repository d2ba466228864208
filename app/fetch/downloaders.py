"""How a file of a source is downloaded: gdown for Google Drive, plain HTTP for mirrors and tests."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from app.errors import first_line
from app.fetch.sources import DownloadFailed, RemoteFile, Source, SourceUnreachable
from app.hub import probe

_PROBE_TIMEOUT_S = 3.0
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Downloaders
# --------------------------------------------------------------------------------------------


class Downloader(Protocol):
    """Fetches one file of a source to ``dest`` (the caller renames it once it is verified)."""

    def reachable(self, source: Source) -> bool:
        """Whether the source's host answers at all (a quick TCP connect)."""
        ...

    def download(self, source: Source, item: RemoteFile, dest: Path, quiet: bool) -> None:
        """Write ``item`` to ``dest``; SourceUnreachable / DownloadFailed when it cannot."""
        ...


def _probe(host: str, port: int, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """One TCP connect, bounded by ``timeout`` even when name resolution stalls."""
    return probe(host, port, timeout)


def _proxied() -> bool:
    return any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


class GdownDownloader:
    """Google Drive through ``gdown``: folder listing (for files without an id) and download.

    The folder is listed once per source with ``download_folder(skip_download=True)``, which
    returns each file's id; each file is then fetched by id with ``gdown.download`` (its own
    progress bar) to the caller's temporary name.
    """

    def __init__(self) -> None:
        self._listings: dict[str, dict[str, str]] = {}

    def reachable(self, source: Source) -> bool:
        return _proxied() or _probe(source.host, 443)

    def _file_id(self, source: Source, item: RemoteFile, quiet: bool) -> str:
        if item.file_id:
            return item.file_id
        assert source.folder_id is not None  # load_sources guarantees it
        listing = self._listings.get(source.folder_id)
        if listing is None:
            import gdown

            try:
                found = gdown.download_folder(
                    id=source.folder_id, quiet=quiet, skip_download=True
                )
            except OSError as exc:  # requests' ConnectionError is an OSError
                raise SourceUnreachable(source.unreachable_line()) from exc
            except Exception as exc:  # gdown's DownloadError, page-format changes
                raise DownloadFailed(
                    f"cannot list the Drive folder {source.folder_id}: {first_line(exc)}"
                ) from None
            # skip_download=True returns GoogleDriveFileToDownload(id, path, local_path) tuples
            listing = {Path(f.path).name: f.id for f in found if not isinstance(f, str)}
            self._listings[source.folder_id] = listing
        if item.name not in listing:
            raise DownloadFailed(f"{item.name} is not in the Drive folder {source.folder_id}")
        return listing[item.name]

    def download(self, source: Source, item: RemoteFile, dest: Path, quiet: bool) -> None:
        import gdown

        file_id = self._file_id(source, item, quiet)
        try:
            gdown.download(id=file_id, output=str(dest), quiet=quiet)
        except OSError as exc:
            raise SourceUnreachable(source.unreachable_line()) from exc
        except Exception as exc:
            raise DownloadFailed(f"{item.name}: {first_line(exc)}") from None
        if not dest.is_file():
            raise DownloadFailed(f"{item.name}: gdown wrote nothing")


class HttpDownloader:
    """A plain HTTP(S) GET of ``source.url_template`` formatted with ``name``, ``id``, ``folder``.

    Serves mirrors that hold the files under their final names, and the tests (a server on
    127.0.0.1). The progress bar is tqdm's.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    def reachable(self, source: Source) -> bool:
        url = urlparse(self._url(source, RemoteFile("probe")))
        port = url.port or (443 if url.scheme == "https" else 80)
        return _proxied() or _probe(url.hostname or source.host, port)

    @staticmethod
    def _url(source: Source, item: RemoteFile) -> str:
        assert source.url_template is not None
        return source.url_template.format(
            name=item.name, id=item.file_id or "", folder=source.folder_id or ""
        )

    def download(self, source: Source, item: RemoteFile, dest: Path, quiet: bool) -> None:
        from tqdm import tqdm

        url = self._url(source, item)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp, open(dest, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=item.name,
                          disable=quiet, file=sys.stderr) as bar:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as exc:
            raise DownloadFailed(f"{item.name}: HTTP {exc.code} from {source.host}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceUnreachable(source.unreachable_line()) from exc


def default_downloader(source: Source) -> Downloader:
    return GdownDownloader() if source.kind == "drive" else HttpDownloader()
