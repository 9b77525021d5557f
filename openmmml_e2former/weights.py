"""Find weight files: a local path, the cache directory, or a configured download.

``resolve_weights(name_or_path)`` returns the path of an existing file:

1. an existing file path is returned as it is;
2. a bare file name (no directory part), or a name listed in :data:`KNOWN_WEIGHTS`
   (e.g. ``"ubio-e2former-lsr"``), is looked up in the cache directory;
3. if it is not there and a download URL is configured (in :data:`KNOWN_WEIGHTS`, or the
   environment variable ``OPENMMML_E2FORMER_URL`` giving a base URL the file name is appended
   to), the file is downloaded with a progress bar, its SHA-256 checked when one is known
   (``OPENMMML_E2FORMER_SHA256`` or the table), and moved into the cache atomically;
4. otherwise (or offline: ``OPENMMML_E2FORMER_OFFLINE=1``, or the download fails) a
   :class:`WeightsNotFoundError` (a ``FileNotFoundError`` and a ``ValueError``) says which
   file to put where.

The cache directory is ``$OPENMMML_E2FORMER_CACHE`` if set, else
``$XDG_CACHE_HOME/openmmml-e2former``, else ``~/.cache/openmmml-e2former``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

ENV_CACHE = "OPENMMML_E2FORMER_CACHE"
ENV_URL = "OPENMMML_E2FORMER_URL"
ENV_SHA256 = "OPENMMML_E2FORMER_SHA256"
ENV_OFFLINE = "OPENMMML_E2FORMER_OFFLINE"


class WeightsNotFoundError(FileNotFoundError, ValueError):
    """A weight file is neither at the given path nor in the cache (nor downloadable).

    Also a ValueError, the package's error type for input a user can fix."""


@dataclass(frozen=True)
class WeightsFile:
    """A weight file the package knows by name."""

    filename: str
    description: str
    url: str | None = None  # None: no verified download address is known
    sha256: str | None = None


#: Weight files known by name. The authors publish their checkpoint on a model hub as
#: IQuestLab/UBio-E2Former-LSR; no download address with a checksum has been verified for
#: this package, so by default the file is put into the cache by hand (or a URL configured).
KNOWN_WEIGHTS = {
    "ubio-e2former-lsr": WeightsFile(
        "ubio-e2former-lsr.pt",
        "the authors' released E2Former-LSR checkpoint (MIT licence), published on a model hub as "
        "IQuestLab/UBio-E2Former-LSR",
    ),
}


def cache_dir() -> str:
    """The weights cache folder (not created here)."""
    if os.environ.get(ENV_CACHE):
        return os.path.abspath(os.path.expanduser(os.environ[ENV_CACHE]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "openmmml-e2former")


def resolve_weights(name_or_path: str, download: bool | None = None, progress: bool = True) -> str:
    """Path of an existing weight file for a path or a name (module docstring for the order).

    ``download=False`` never downloads; ``None`` downloads unless ``OPENMMML_E2FORMER_OFFLINE``
    is set.
    """
    text = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isfile(text):
        return text
    spec = KNOWN_WEIGHTS.get(text)
    if spec is None and os.path.dirname(text):
        raise WeightsNotFoundError(f"weight file not found: {text}")
    filename = spec.filename if spec else text
    cached = os.path.join(cache_dir(), filename)
    if os.path.isfile(cached):
        return cached
    url = _configured_url(spec, filename)
    if download is None:
        download = os.environ.get(ENV_OFFLINE, "") in ("", "0")
    if url is None or not download:
        raise WeightsNotFoundError(missing_weights_message(filename, spec, url, None))
    sha256 = (spec.sha256 if spec else None) or os.environ.get(ENV_SHA256) or None
    try:
        return download_file(url, cached, sha256, progress)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsNotFoundError(missing_weights_message(filename, spec, url, exc)) from exc


def _configured_url(spec: WeightsFile | None, filename: str) -> str | None:
    if spec is not None and spec.url:
        return spec.url
    base = os.environ.get(ENV_URL)
    if base:
        return base if base.endswith(filename) else base.rstrip("/") + "/" + filename
    return None


def missing_weights_message(
    filename: str, spec: WeightsFile | None, url: str | None, error: Exception | None
) -> str:
    """The offline message: which file, where to put it, and how to change the place."""
    target = os.path.join(cache_dir(), filename)
    what = f" ({spec.description})" if spec else ""
    tried = f" Downloading {url} failed: {error}." if error else ""
    how = (
        f" No download address is configured (set {ENV_URL} to a base URL to enable downloads)."
        if url is None
        else ""
    )
    return (
        f"weight file {filename!r}{what} is not available.{tried}{how} Put the file at {target} "
        f"(the cache folder; set {ENV_CACHE} to use another folder) or pass its path as modelPath=."
    )


def download_file(url: str, destination: str, sha256: str | None = None, progress: bool = True) -> str:
    """Download ``url`` to ``destination`` with a progress bar; checks ``sha256`` if given.

    The data go to a temporary file beside the destination, which replaces it only when
    complete and verified, so an interrupted download never leaves a partial weight file.
    """
    from tqdm import tqdm

    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    partial = f"{destination}.part-{os.getpid()}"
    digest = hashlib.sha256()
    print(f"downloading {url} -> {destination}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if sha256 and digest.hexdigest() != sha256.lower():
            raise ValueError(
                f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {digest.hexdigest()}; "
                "the file was not kept"
            )
        if not sha256:
            print(
                f"warning: no SHA-256 is known for {url}, so the download was not verified; its SHA-256 is "
                f"{digest.hexdigest()} (set {ENV_SHA256} to check it next time)",
                file=sys.stderr,
            )
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return destination
