"""Verified, cached downloads of weights and checkpoints through gdown.

``fetch_file`` takes a Google Drive file id, a Google Drive URL or a plain http(s) URL, downloads it
with ``gdown.download`` into a cache directory and checks its sha256. The cache only ever holds whole
files: the bytes go to a temporary file next to the target (``files.atomic_write``), which is hashed and
then moved into place; on any failure (network, checksum, interruption) the temporary file is removed.

``KNOWN_FILES`` names OpenAI's CLIP archives (``ViT-B-16``, ``RN50``), whose URLs carry their sha256:
``tfclip-reid download-weights ViT-B-16`` fetches one and prints its path, for ``tfclip.clip_weights``.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import gdown
from gdown.parse_url import parse_url
from open_clip.pretrained import get_pretrained_url

from .files.atomic import atomic_write

CACHE_ENV = "TFCLIP_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "tfclip_plugin")
READ_TIMEOUT_S = 60.0  # seconds without a byte from the server before a download fails
_DRIVE_DOWNLOAD_URL = "https://drive.google.com/uc?id={}"
_DRIVE_ID = re.compile(r"[-\w]{20,}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DownloadError(RuntimeError):
    """A download failed (network, HTTP status, connection dropped mid-transfer)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


@dataclass(frozen=True)
class KnownFile:
    """A released file ``fetch_known`` can download: where it lives and what it must hash to."""

    url: str
    sha256: str
    description: str
    filename: Optional[str] = None


_OPENAI_ARCHIVES = {"ViT-B-16": "tfclip_vit", "RN50": "tfclip_rn50"}


def _openai_archive(name: str, model: str) -> KnownFile:
    """OpenAI's TorchScript archive of CLIP ``name``: open_clip's URL, whose last folder is the file's sha256."""
    url = get_pretrained_url(name, "openai")
    return KnownFile(url=url, sha256=url.split("/")[-2], filename=f"{name}.pt",
                     description=f"OpenAI CLIP {name} TorchScript archive (the sha256 is part of OpenAI's URL); "
                                 f"tfclip.clip_weights for {model}")


KNOWN_FILES: Dict[str, KnownFile] = {name: _openai_archive(name, model) for name, model in _OPENAI_ARCHIVES.items()}
"""Files ``fetch_known`` can download, by name. An entry is added only with the sha256 of the exact file
(OpenAI publishes it in the URL): a changed upload then fails loudly instead of loading other weights. No
TF-CLIP checkpoint is listed: the official ones are Baidu Pan archives, which gdown cannot read.
"""


def default_cache_dir() -> str:
    """``$TFCLIP_CACHE`` if set, else ``~/.cache/tfclip_plugin`` (user expanded)."""
    return os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def sha256sum(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read ``chunk_size`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_source(url_or_id: str) -> Tuple[str, Optional[str]]:
    """The URL gdown is given and the default cache filename for a Drive id, Drive URL or http(s) URL.

    A Drive id or any Drive file URL (``/file/d/<id>/view``, ``/uc?id=<id>``, ``/open?id=<id>``) becomes
    ``https://drive.google.com/uc?id=<id>`` and is cached as ``<id>``; a plain URL is used as given and
    cached under the last component of its path (None when its path ends in ``/``).
    """
    text = url_or_id.strip()
    if "://" not in text:
        if _DRIVE_ID.fullmatch(text):
            return _DRIVE_DOWNLOAD_URL.format(text), text
        raise ValueError(
            f"{url_or_id!r} is neither an http(s) URL nor a Google Drive file id "
            "(letters, digits, '-' and '_', 20 or more of them)"
        )
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{url_or_id!r}: only http(s) URLs and Google Drive file ids can be downloaded")
    if parsed.hostname in ("drive.google.com", "docs.google.com"):
        file_id = parse_url(text)[0]
        if not file_id:
            raise ValueError(
                f"{url_or_id!r} is a Google Drive URL without a file id; give the link of one file "
                "(https://drive.google.com/file/d/<id>/view) or its id"
            )
        return _DRIVE_DOWNLOAD_URL.format(file_id), file_id
    name = os.path.basename(urllib.parse.unquote(parsed.path))
    return text, (name if name not in ("", ".", "..") else None)


def fetch_file(
    url_or_id: str,
    sha256: Optional[str],
    cache_dir: Optional[str] = None,
    filename: Optional[str] = None,
    *,
    quiet: bool = False,
) -> str:
    """Download a file into the cache (once) and return its path, verified against ``sha256``.

    Args:
        url_or_id: a Google Drive file id, a Google Drive file URL or a plain http(s) URL.
        sha256: the expected hex digest (case-insensitive). ``None`` skips verification: a cached file is
            returned as is, and a fresh download warns with its digest so that it can be pinned.
        cache_dir: where files are kept; default ``$TFCLIP_CACHE`` or ``~/.cache/tfclip_plugin``.
        filename: the name in the cache; default the URL's last path component, or the Drive id.
        quiet: no progress bar.

    A cached file with the expected digest is returned without any request; one with another digest
    is downloaded again and replaced only once the new copy verifies.

    Raises:
        ValueError: malformed ``url_or_id``, ``sha256`` or ``filename``.
        ChecksumError: the downloaded bytes hash to something else (nothing is written to the cache).
        DownloadError: the download failed (nothing is written to the cache).
    """
    expected = _normalise_sha256(sha256)
    url, default_name = resolve_source(url_or_id)
    name = _check_filename(filename) if filename is not None else default_name
    if name is None:
        raise ValueError(f"{url_or_id!r} does not end in a file name; pass filename= to name the cached file")
    directory = os.path.expanduser(cache_dir) if cache_dir else default_cache_dir()
    target = os.path.join(directory, name)

    stale_digest = None
    if os.path.isfile(target):
        if expected is None:
            return target
        stale_digest = sha256sum(target)
        if stale_digest == expected:
            return target

    os.makedirs(directory, exist_ok=True)
    try:
        actual = _download_into(url, target, expected, quiet)
    except DownloadError as error:
        if stale_digest is None or isinstance(error, ChecksumError):
            raise
        raise DownloadError(
            f"{target} is in the cache with sha256 {stale_digest}, not the expected {expected}, and a fresh "
            f"copy could not be downloaded: {error}"
        ) from error
    if expected is None:
        warnings.warn(
            f"{url_or_id}: downloaded to {target} without verification; its sha256 is {actual}. "
            "Pass it as sha256 to verify later downloads.",
            stacklevel=2,
        )
    return target


def fetch_known(name: str, cache_dir: Optional[str] = None, *, quiet: bool = False) -> str:
    """``fetch_file`` for an entry of ``KNOWN_FILES``; unknown names raise KeyError listing the known ones."""
    if name not in KNOWN_FILES:
        known = ", ".join(sorted(KNOWN_FILES)) or "none are registered yet"
        raise KeyError(f"no downloadable file named {name!r}; known files: {known}")
    entry = KNOWN_FILES[name]
    return fetch_file(entry.url, entry.sha256, cache_dir=cache_dir, filename=entry.filename, quiet=quiet)


def _normalise_sha256(sha256: Optional[str]) -> Optional[str]:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"sha256 must be 64 hexadecimal characters, got {sha256!r}")
    return digest


def _check_filename(filename: str) -> str:
    if filename in ("", ".", "..") or os.path.basename(filename) != filename or "\\" in filename:
        raise ValueError(f"filename must be a plain file name without directories, got {filename!r}")
    return filename


def _gdown_options(url: str, target: str, quiet: bool) -> dict:
    """Keyword arguments for ``gdown.download``: Google cookies only for Drive; where the installed gdown
    takes them, a read timeout and the cache path in its progress message."""
    options = {"quiet": quiet, "use_cookies": url.startswith(_DRIVE_DOWNLOAD_URL.format(""))}
    accepted = inspect.signature(gdown.download).parameters
    if "timeout" in accepted:
        options["timeout"] = READ_TIMEOUT_S
    if "log_messages" in accepted:
        options["log_messages"] = {"output": f"To: {target}\n"}
    return options


def _download_into(url: str, target: str, expected: Optional[str], quiet: bool) -> str:
    """Download ``url`` into ``target`` atomically (``files.atomic_write``), verified before it is moved into
    place; returns its sha256."""
    with atomic_write(target, "wb") as stream:
        try:
            gdown.download(url=url, output=stream, **_gdown_options(url, target, quiet))
        except Exception as error:  # requests' and gdown's own classes, which differ between gdown versions
            raise DownloadError(
                f"downloading {url} failed: {str(error).rstrip('.')}. Check the URL and the network and retry, or "
                f"download the file yourself and put it at {target}"
            ) from error
        stream.flush()
        actual = sha256sum(stream.name)
        if expected is not None and actual != expected:
            raise ChecksumError(
                f"sha256 mismatch for {url}: expected {expected}, got {actual} "
                f"({os.path.getsize(stream.name)} bytes). The download was discarded. The file behind the URL is not "
                "the one the checksum was made for (a truncated or corrupted transfer, an HTML error or quota "
                f"page, or a replaced upload): retry; if it persists, download the file yourself, compare its "
                f"sha256sum with the expected one and put it at {target}"
            )
    return actual
