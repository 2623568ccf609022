"""Publishing an object whole or not at all, on any fsspec filesystem.

How depends on the store (see :func:`atomic_writer`):

- local disk: a hidden temporary file next to the target, fsynced, then ``os.replace`` (an atomic rename);
- S3 and GCS: the upload is staged and becomes visible in one step when it is committed (S3
  ``PutObject``/``CompleteMultipartUpload``, the last chunk of a GCS resumable upload); a failure
  aborts the staged upload. These stores have no rename, and none is needed: no temporary object exists;
- any other fsspec store: a hidden temporary object next to the target, moved into place, and removed
  in every case.

A failure of the store itself (a folder that cannot be created, no permission, a read-only or full
filesystem) is an :class:`ExportDestinationError` naming the destination, the OS error and what to do;
an exception raised by the caller inside the ``with`` block goes through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_ftevents.errors import ExportDestinationError
from airflow_ftevents.export.destination import Destination

# Stores whose writers (s3fs, gcsfs) stage the upload until commit() and drop it on discard(). Not every
# fsspec store honours autocommit=False (the memory store publishes on open), hence a list, not a guess.
STAGED_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
STAGED_BLOCK_SIZE = 8 * 1024 * 1024  # part size of staged uploads (S3 needs >= 5 MiB); bounds memory

# Causes that trying again later may cure; any other OS error means the destination itself is wrong.
_MAY_PASS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET}
)
# Object stores raise the builtin subclasses, often without an errno.
_ERRNO_OF = (
    (PermissionError, errno.EACCES),
    (FileNotFoundError, errno.ENOENT),
    (FileExistsError, errno.EEXIST),
    (NotADirectoryError, errno.ENOTDIR),
    (IsADirectoryError, errno.EISDIR),
)


def _temp_name(name: str) -> str:
    return f".{name}.tmp-{uuid.uuid4().hex}"


def _blocking_file(path: str) -> str | None:
    """The regular file that stands where a folder of local ``path`` should be, if any."""
    current = os.path.dirname(path)
    while current and current != os.path.dirname(current):
        if os.path.lexists(current):
            return current if not os.path.isdir(current) else None
        current = os.path.dirname(current)
    return None


def _what_to_do(dest: Destination, code: int | None) -> str:
    folder = dest.sibling("").uri
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _blocking_file(dest.path) if dest.local else None
        what = (
            f"{blocker} is a file, not a folder" if blocker else "A part of the path is a file, not a folder"
        )
        return f"{what}: choose a destination that is not under a file, or move that file away"
    if code == errno.EISDIR:
        return "The destination is a folder: end it with '/' to export into it as a file named after the job"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"The task may not write to {folder}: give the user it runs as (or the connection's "
            "credentials) write access there, or choose another destination"
        )
    if code == errno.EROFS:
        return "The filesystem is read-only on this worker: choose a destination on a writable filesystem"
    if code == errno.ENOENT:
        return (
            f"{folder} (or its bucket) does not exist and cannot be created: create it or fix the destination"
        )
    if code == errno.ENAMETOOLONG:
        return "A name in the path is too long for this filesystem: choose a shorter destination"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "The filesystem is full or over quota: free space or choose another destination, then retry"
    return f"Check that the task can write to {folder}, or choose another destination"


def destination_error(dest: Destination, exc: OSError, temp: str | None = None) -> ExportDestinationError:
    """The error for an OS error the store raised while writing ``dest``; ``temp`` is not named in it."""
    code = exc.errno
    if code is None:
        code = next((number for cls, number in _ERRNO_OF if isinstance(exc, cls)), None)
    if exc.strerror and exc.errno is not None:
        detail = f"[Errno {exc.errno}] {exc.strerror}"
        if exc.filename is not None and exc.filename != temp:
            detail += f": {exc.filename!r}"
    else:
        detail = str(exc) or "no detail"
    error = ExportDestinationError(
        f"Cannot write the export to {dest.uri}: {type(exc).__name__}: {detail}",
        hint=_what_to_do(dest, code),
    )
    error.retryable = code is None or code in _MAY_PASS
    return error


@contextlib.contextmanager
def _store_errors(dest: Destination, temp: str | None = None) -> Iterator[None]:
    """OS errors of the store become an ExportDestinationError (raised from the original)."""
    try:
        yield
    except ExportDestinationError:
        raise
    except OSError as exc:
        raise destination_error(dest, exc, temp) from exc


class ExportSink:
    """What :func:`atomic_writer` hands out: ``write(bytes)``, with the store's OS errors explained."""

    def __init__(self, handle: Any, dest: Destination, temp: str | None = None) -> None:
        self._handle = handle
        self._dest = dest
        self._temp = temp

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            raise destination_error(self._dest, exc, self._temp) from exc


@contextlib.contextmanager
def atomic_writer(dest: Destination) -> Iterator[ExportSink]:
    """A binary sink whose content appears at ``dest`` only if the ``with`` block ends without error.

    On error, nothing new is visible at ``dest`` (an older object stays as it was) and no temporary
    object is left behind.
    """
    if dest.local:
        with _local_writer(dest) as sink:
            yield sink
    elif dest.protocol in STAGED_PROTOCOLS:
        with _staged_writer(dest) as sink:
            yield sink
    else:
        with _moved_writer(dest) as sink:
            yield sink


@contextlib.contextmanager
def _local_writer(dest: Destination) -> Iterator[ExportSink]:
    path = dest.path
    directory = os.path.dirname(path)
    temp = os.path.join(directory, _temp_name(os.path.basename(path)))
    with _store_errors(dest, temp):
        os.makedirs(directory, exist_ok=True)
        handle = open(temp, "xb")  # noqa: SIM115 - closed on both paths below
    try:
        yield ExportSink(handle, dest, temp)
        with _store_errors(dest, temp):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk may fail the close too; the unlink still runs
            handle.close()
        with contextlib.suppress(OSError):  # the original error matters, not a failed clean-up
            os.unlink(temp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _staged_writer(dest: Destination) -> Iterator[ExportSink]:
    with _store_errors(dest):
        handle = dest.fs.open(dest.path, "wb", autocommit=False, block_size=STAGED_BLOCK_SIZE)
    try:
        yield ExportSink(handle, dest)
        with _store_errors(dest):
            handle.close()  # uploads the last part; nothing is visible yet
            handle.commit()  # one atomic step: the whole object appears
    except BaseException:
        # The order of fsspec's own transactions: close, then discard (aborts the staged upload).
        with contextlib.suppress(Exception):
            handle.close()
        handle.discard()
        raise


@contextlib.contextmanager
def _moved_writer(dest: Destination) -> Iterator[ExportSink]:
    fs = dest.fs
    temp = dest.sibling(_temp_name(dest.name)).path
    with contextlib.suppress(Exception):  # stores without folders have nothing to create
        fs.makedirs(posixpath.dirname(dest.path), exist_ok=True)
    try:
        with _store_errors(dest, temp):
            handle = fs.open(temp, "wb")
        try:
            yield ExportSink(handle, dest, temp)
        except BaseException:
            with contextlib.suppress(Exception):
                handle.close()
            raise
        with _store_errors(dest, temp):
            handle.close()
            fs.mv(temp, dest.path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if fs.exists(temp):
                fs.rm(temp)


def write_bytes_atomic(dest: Destination, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``dest`` atomically; returns the number of bytes."""
    size = 0
    with atomic_writer(dest) as sink:
        for chunk in chunks:
            sink.write(chunk)
            size += len(chunk)
    return size
