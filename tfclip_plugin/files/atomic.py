"""Atomic file writes: every file the plugin writes goes through :func:`atomic_write`.

The data goes to a temporary file with a unique name in the target's folder; only when it is complete is it
flushed, fsynced and renamed over the target (``os.replace``, atomic on POSIX and Windows), and the folder is
fsynced so the rename survives a power cut. On any failure the temporary file is removed and the target is
left as it was. A write that fails for lack of space, quota or permission raises :class:`WriteFailedError`,
whose message names the path, what had been written, the size needed (when the writer knows it) and the
free space of the folder.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from typing import IO, Iterator, Optional

DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file size limit exceeded",
               errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system"}


class WriteFailedError(OSError):
    """A file could not be written (no space, quota, file size limit, permissions); the previous file at
    the path, if any, is intact. ``errno`` is the underlying error's; ``str()`` is the message alone."""

    def __init__(self, code: Optional[int], message: str) -> None:
        super().__init__(message)
        self.errno = code


def temporary_path(path: str) -> str:
    """A unique hidden name beside ``path``: ``.<name>.<pid>-<random>.tmp``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _size(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def file_size_limit() -> Optional[int]:
    """The largest file this process may write (``ulimit -f``, RLIMIT_FSIZE) in bytes; None when unlimited or
    unknown."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY or limit < 0 else int(limit)


def describe_write_failure(path: str, error: OSError, written: Optional[int] = None,
                           size_hint: Optional[int] = None) -> str:
    """One line naming ``path``, the cause, the bytes written so far, the size needed, the file size limit (for
    EFBIG) and the free space."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    cause = DISK_ERRORS.get(error.errno, error.strerror or str(error))
    parts = [f"cannot write {path}: {cause}"]
    if written is not None:
        parts.append(f"{_size(written)} written before the failure")
    if size_hint:
        parts.append(f"about {_size(size_hint)} needed")
    limit = file_size_limit() if error.errno == errno.EFBIG else None
    if limit is not None:
        parts.append(f"the file size limit (ulimit -f) is {_size(limit)}")
    try:
        parts.append(f"{_size(shutil.disk_usage(folder).free)} free in {folder}")
    except OSError:
        pass
    return "; ".join(parts) + ". The previous file at that path, if any, is unchanged."


def disk_error(error: BaseException) -> Optional[OSError]:
    """The OSError with a disk, quota, size-limit or permission errno behind ``error``: itself, or one in its
    ``__cause__`` / ``__context__`` chain (``torch.save`` re-raises a failed write as a RuntimeError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened and synced
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", encoding: Optional[str] = None,
                 size_hint: Optional[int] = None) -> Iterator[IO]:
    """Open a stream whose content replaces ``path`` only when the ``with`` block completes.

    Args:
        path: the file to write (its folder is created).
        mode: 'wb' (binary) or 'w' (text; ``encoding`` defaults to UTF-8).
        size_hint: the expected size in bytes, reported when the write fails for lack of space.

    Raises:
        WriteFailedError: the disk, quota, file size limit or permissions refused the data.
        Anything the block raises, after the temporary file is removed.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise WriteFailedError(error.errno, describe_write_failure(path, error)) from error
    tmp = temporary_path(path)
    stream = None
    try:
        stream = open(tmp, mode.replace("w", "x"), encoding=(encoding or "utf-8") if mode == "w" else None)
        yield stream
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException as error:
        written = None
        if stream is not None:
            with contextlib.suppress(Exception):
                written = os.fstat(stream.fileno()).st_size if not stream.closed else os.path.getsize(tmp)
            with contextlib.suppress(Exception):
                stream.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        cause = disk_error(error)
        if cause is not None and not isinstance(error, WriteFailedError):
            raise WriteFailedError(cause.errno, describe_write_failure(path, cause, written, size_hint)) from error
        raise


def write_text(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_write(path, "w") as stream:
        stream.write(text)
    return path
