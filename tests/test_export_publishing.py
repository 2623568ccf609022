"""Publishing whole or not at all (airflow_ftevents.export.publish), and the errors of an unusable store.

Local disk and fsspec's memory store are real; the staged store (S3, GCS) is a recording double here for
the order of close/commit/discard (tests/test_export_s3.py runs the real thing against moto). Every failure
leaves no final object and no temporary file, and a store's failure names the destination, the OS error
and what to do.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_ftevents.errors import ExportDestinationError
from airflow_ftevents.export import Destination, atomic_writer, export_events, publish, write_bytes_atomic

LINES = [b'{"id":"e1","created_at":1}\n', b'{"id":"e2","created_at":2}\n']


def local(path: Path) -> Destination:
    return Destination(fsspec.filesystem("file"), str(path), "file")


def failing_after(chunks: list[bytes], error: BaseException) -> Iterator[bytes]:
    yield from chunks
    raise error


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- local disk: temporary file, fsync, rename ------------------------------------------------------


@pytest.mark.parametrize("previous", [None, b"previous export\n"])
def test_local_write_is_whole_or_nothing(tmp_path: Path, previous: bytes | None):
    target = tmp_path / "x.jsonl"
    if previous is not None:
        target.write_bytes(previous)
    interrupted = ConnectionError("the source failed")
    with pytest.raises(ConnectionError) as info:  # the caller's own error goes through unchanged
        write_bytes_atomic(local(target), failing_after(LINES, interrupted))
    assert info.value is interrupted
    assert listing(tmp_path) == ([] if previous is None else ["x.jsonl"])
    if previous is not None:
        assert target.read_bytes() == previous
    assert write_bytes_atomic(local(target), LINES) == 54
    assert target.read_bytes() == b"".join(LINES) and listing(tmp_path) == ["x.jsonl"]


def test_missing_local_folders_are_created(tmp_path: Path):
    target = tmp_path / "a" / "b" / "x.jsonl"
    assert write_bytes_atomic(local(target), LINES) == 54
    assert target.read_bytes() == b"".join(LINES)
    assert listing(target.parent) == ["x.jsonl"]


def test_the_temporary_file_is_hidden_next_to_the_target_while_writing(tmp_path: Path):
    target = tmp_path / "x.jsonl"
    with atomic_writer(local(target)) as sink:
        assert sink.write(LINES[0]) == len(LINES[0])
        (temp,) = listing(tmp_path)
        assert temp.startswith(".x.jsonl.tmp-") and len(temp) == len(".x.jsonl.tmp-") + 32
        assert not target.exists()
    assert listing(tmp_path) == ["x.jsonl"] and target.read_bytes() == LINES[0]


# -- an unusable local destination ------------------------------------------------------------------


def test_a_destination_under_a_regular_file_names_that_file(tmp_path: Path):
    blocker = tmp_path / "exports"
    blocker.write_bytes(b"not a folder\n")
    for target, error in (
        (blocker / "x.jsonl", f"FileExistsError: [Errno 17] File exists: '{blocker}'"),
        (blocker / "sub" / "x.jsonl", f"NotADirectoryError: [Errno 20] Not a directory: '{blocker}/sub'"),
    ):
        with pytest.raises(ExportDestinationError) as info:
            write_bytes_atomic(local(target), LINES)
        assert str(info.value) == (
            f"Cannot write the export to file://{target}: {error}. {blocker} is a file, not a folder: "
            "choose a destination that is not under a file, or move that file away"
        )
        assert not info.value.retryable
        assert isinstance(info.value, OSError) and isinstance(info.value.__cause__, OSError)
    assert listing(tmp_path) == ["exports"] and blocker.read_bytes() == b"not a folder\n"


def test_a_folder_where_the_file_should_go_fails_at_the_rename_and_leaves_no_temporary_file(tmp_path: Path):
    (tmp_path / "x.jsonl").mkdir()
    with pytest.raises(ExportDestinationError) as info:
        write_bytes_atomic(local(tmp_path / "x.jsonl"), LINES)
    assert str(info.value) == (
        f"Cannot write the export to file://{tmp_path}/x.jsonl: IsADirectoryError: [Errno 21] Is a "
        "directory. "
        "The destination is a folder: end it with '/' to export into it as a file named after the job"
    )
    assert listing(tmp_path) == ["x.jsonl"] and listing(tmp_path / "x.jsonl") == []


@pytest.mark.parametrize(
    ("failure", "shown", "hint"),
    [
        (
            PermissionError(errno.EACCES, "Permission denied"),
            "PermissionError: [Errno 13] Permission denied",
            "The task may not write to file://{folder}/: give the user it runs as (or the connection's "
            "credentials) write access there, or choose another destination",
        ),
        (
            OSError(errno.EROFS, "Read-only file system"),
            "OSError: [Errno 30] Read-only file system",
            "The filesystem is read-only on this worker: choose a destination on a writable filesystem",
        ),
    ],
)
def test_no_permission_or_a_read_only_filesystem_says_what_to_do(tmp_path, monkeypatch, failure, shown, hint):
    """The OS refuses to create the temporary file (as root, a real EACCES cannot be provoked)."""
    opened: list[str] = []

    def refuse(path: str, mode: str) -> Any:
        opened.append(path)
        failure.filename = path
        raise failure

    monkeypatch.setattr(publish, "open", refuse, raising=False)
    target = tmp_path / "x.jsonl"
    with pytest.raises(ExportDestinationError) as info:
        write_bytes_atomic(local(target), LINES)
    assert str(info.value) == (
        f"Cannot write the export to file://{target}: {shown}. " + hint.format(folder=tmp_path)
    )
    assert not info.value.retryable and info.value.__cause__ is failure
    assert [os.path.dirname(p) for p in opened] == [str(tmp_path)]  # the temporary name is not shown
    assert listing(tmp_path) == []


def test_a_full_disk_while_writing_removes_the_temporary_file_and_may_be_retried(tmp_path, monkeypatch):
    real_open = open

    class FullDisk:
        def __init__(self, path: str, mode: str) -> None:
            self.file = real_open(path, mode)

        def write(self, data: bytes) -> int:
            if self.file.tell() + len(data) > 30:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

    monkeypatch.setattr(publish, "open", FullDisk, raising=False)
    target = tmp_path / "x.jsonl"
    target.write_bytes(b"previous export\n")
    with pytest.raises(ExportDestinationError) as info:
        write_bytes_atomic(local(target), LINES)
    assert str(info.value) == (
        f"Cannot write the export to file://{target}: OSError: [Errno 28] No space left on device. "
        "The filesystem is full or over quota: free space or choose another destination, then retry"
    )
    assert info.value.retryable
    assert listing(tmp_path) == ["x.jsonl"] and target.read_bytes() == b"previous export\n"


def test_a_failing_companion_publishes_nothing(tmp_path: Path):
    """The CSV cannot be published (a folder holds its name): the JSON Lines file is not published either."""
    (tmp_path / "ftjob-c.metrics.csv").mkdir()
    metrics = b'{"id":"e1","created_at":1,"type":"metrics","data":{"step":1,"train_loss":0.5}}\n'
    with pytest.raises(ExportDestinationError) as info:
        export_events(
            iter([metrics]),
            local(tmp_path / "ftjob-c.jsonl"),
            job_id="ftjob-c",
            status="ok",
            metrics_csv=True,
        )
    assert str(info.value).startswith(
        f"Cannot write the export to file://{tmp_path}/ftjob-c.metrics.csv: IsADirectoryError: [Errno 21]"
    )
    assert listing(tmp_path) == ["ftjob-c.metrics.csv"] and listing(tmp_path / "ftjob-c.metrics.csv") == []


# -- any other fsspec store: temporary object, moved --------------------------------------------------


def test_atomic_writer_on_other_stores_publishes_whole_or_nothing():
    """A store that is neither local nor staged (fsspec's memory store): a temporary object, moved."""
    fs = fsspec.filesystem("memory")
    folder = f"/atomic-{uuid.uuid4().hex}"
    dest = Destination(fs, f"{folder}/x.jsonl", "memory")

    def failing() -> Any:
        yield b'{"a":1}\n'
        raise OSError("interrupted")

    with pytest.raises(OSError, match="interrupted") as info:
        write_bytes_atomic(dest, failing())
    assert type(info.value) is OSError  # the caller's error, not the store's
    assert not fs.exists(dest.path) and fs.find(folder) == []  # no object, no temporary object
    assert write_bytes_atomic(dest, [b'{"a":1}\n', b'{"b":2}\n']) == 16
    assert fs.cat(dest.path) == b'{"a":1}\n{"b":2}\n'
    with pytest.raises(OSError, match="interrupted"):
        write_bytes_atomic(dest, failing())
    assert fs.cat(dest.path) == b'{"a":1}\n{"b":2}\n'
    assert fs.find(folder) == [f"{folder}/x.jsonl"]
    fs.rm(folder, recursive=True)


def test_a_failing_move_on_other_stores_leaves_no_temporary_object(monkeypatch):
    fs = fsspec.filesystem("memory")
    folder = f"/atomic-{uuid.uuid4().hex}"
    dest = Destination(fs, f"{folder}/x.jsonl", "memory", "mem_conn")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("Access Denied")

    monkeypatch.setattr(fs, "mv", refuse)
    with pytest.raises(ExportDestinationError) as info:
        write_bytes_atomic(dest, LINES)
    assert str(info.value) == (
        f"Cannot write the export to memory://mem_conn@{folder[1:]}/x.jsonl: PermissionError: Access Denied. "
        f"The task may not write to memory://mem_conn@{folder[1:]}/: give the user it runs as (or the "
        "connection's credentials) write access there, or choose another destination"
    )
    assert fs.find(folder) == []


# -- staged stores (S3, GCS): the upload appears on commit, is discarded on failure ---------------------


class StagedFile:
    def __init__(self, store: StagedStore, path: str, fail: dict[str, BaseException]) -> None:
        self.store, self.path, self.fail, self.data = store, path, fail, b""

    def _call(self, name: str) -> None:
        self.store.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def write(self, data: bytes) -> int:
        self._call("write")
        self.data += data
        return len(data)

    def close(self) -> None:
        self._call("close")

    def commit(self) -> None:
        self._call("commit")
        self.store.objects[self.path] = self.data

    def discard(self) -> None:
        self._call("discard")


class StagedStore:
    """What s3fs and gcsfs do with ``autocommit=False``: nothing is visible before ``commit()``."""

    def __init__(self, **fail: BaseException) -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.objects: dict[str, bytes] = {}

    def open(self, path: str, mode: str, autocommit: bool, block_size: int) -> StagedFile:
        self.calls.append(f"open {mode} autocommit={autocommit} block_size={block_size}")
        return StagedFile(self, path, self.fail)


OPEN = f"open wb autocommit=False block_size={publish.STAGED_BLOCK_SIZE}"


@pytest.mark.parametrize("protocol", ["s3", "s3a", "gs", "gcs"])
def test_a_staged_upload_is_committed_at_the_end(protocol: str):
    store = StagedStore()
    assert write_bytes_atomic(Destination(store, "b/k.jsonl", protocol), LINES) == 54
    assert store.calls == [OPEN, "write", "write", "close", "commit"]
    assert store.objects == {"b/k.jsonl": b"".join(LINES)}


def test_a_staged_upload_is_discarded_when_the_source_fails():
    store = StagedStore()
    with pytest.raises(ConnectionError, match=r"^lost$"):
        write_bytes_atomic(
            Destination(store, "b/k.jsonl", "s3"), failing_after(LINES, ConnectionError("lost"))
        )
    assert store.calls == [OPEN, "write", "write", "close", "discard"]
    assert store.objects == {}


def test_a_refused_commit_is_discarded_and_explained():
    store = StagedStore(commit=PermissionError("Access Denied"))
    with pytest.raises(ExportDestinationError) as info:
        write_bytes_atomic(Destination(store, "bucket/k.jsonl", "s3", "aws_conn"), LINES)
    assert str(info.value) == (
        "Cannot write the export to s3://aws_conn@bucket/k.jsonl: PermissionError: Access Denied. "
        "The task may not write to s3://aws_conn@bucket/: give the user it runs as (or the connection's "
        "credentials) write access there, or choose another destination"
    )
    assert not info.value.retryable
    assert store.calls == [OPEN, "write", "write", "close", "commit", "close", "discard"]
    assert store.objects == {}


def test_a_missing_bucket_while_uploading_a_part_is_explained():
    store = StagedStore(write=FileNotFoundError(errno.ENOENT, "The specified bucket does not exist"))
    with pytest.raises(ExportDestinationError) as info:
        write_bytes_atomic(Destination(store, "nobucket/k.jsonl", "gs"), LINES)
    assert str(info.value) == (
        "Cannot write the export to gs://nobucket/k.jsonl: FileNotFoundError: [Errno 2] The specified bucket "
        "does not exist. gs://nobucket/ (or its bucket) does not exist and cannot be created: create it or "
        "fix the destination"
    )
    assert store.calls == [OPEN, "write", "close", "discard"]
    assert store.objects == {}
