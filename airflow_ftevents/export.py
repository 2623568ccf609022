"""Writing an export: JSON Lines published atomically on any fsspec filesystem, plus its companions.

No Airflow here: the operator resolves its ``destination`` to a filesystem and a path, then hands the
event blocks of :meth:`FineTuneEventsHook.iter_event_blocks` to :func:`export_events`, so everything that
decides what lands in storage is tested without Airflow machinery.

How an object is published whole or not at all depends on the store (see :func:`atomic_writer`):

- local disk: a hidden temporary file next to the target, fsynced, then ``os.replace`` (an atomic rename);
- S3 and GCS: the upload is staged and becomes visible in one step when it is committed (S3
  ``PutObject``/``CompleteMultipartUpload``, the last chunk of a GCS resumable upload); a failure
  aborts the staged upload. These stores have no rename, and none is needed: no temporary object exists;
- any other fsspec store: a hidden temporary object next to the target, moved into place, and removed
  in every case.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import posixpath
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

LOCAL_PROTOCOLS = frozenset({"file", "local"})
# Stores whose writers (s3fs, gcsfs) stage the upload until commit() and drop it on discard(). Not every
# fsspec store honours autocommit=False (the memory store publishes on open), hence a list, not a guess.
STAGED_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
STAGED_BLOCK_SIZE = 8 * 1024 * 1024  # part size of staged uploads (S3 needs >= 5 MiB); bounds memory
PROGRESS_EVERY = 10.0  # seconds between progress lines in the task log

# Columns of the metrics CSV that come first, in this order, when the job reports them.
METRIC_COLUMNS = (
    "step",
    "created_at",
    "train_loss",
    "valid_loss",
    "train_mean_token_accuracy",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
    "total_steps",
)
MAX_PLOT_POINTS = 20_000  # per series; longer series are thinned by a fixed stride
_METRICS_MARK = b'"type":"metrics"'  # cheap pre-filter: event lines are compact JSON

MANIFEST_KEYS = (
    "uri",
    "job_id",
    "count",
    "first_event_id",
    "last_event_id",
    "first_created_at",
    "last_created_at",
    "status",
    "bytes",
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class XComLimitError(ValueError):
    """More events than ``max_xcom_events``: they belong in a file, not in the metadata database."""


def file_name_for(job_id: str, suffix: str = ".jsonl") -> str:
    """A safe file name for a job id: only letters, digits, ``.``, ``_``, ``-``; never hidden or empty."""
    name = _UNSAFE.sub("_", str(job_id)).strip("._")
    return (name or "job") + suffix


def companion_name(name: str, suffix: str) -> str:
    """``ftjob-1.jsonl`` -> ``ftjob-1.metrics.csv``: the companions share the JSON Lines file's stem."""
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") and len(name) > len(".jsonl") else name
    return stem + suffix


@dataclass(frozen=True)
class Destination:
    """One object to write: the filesystem, the path in its terms, and the URI users see.

    ``uri`` keeps the connection id (``s3://aws_conn@bucket/key``), so it can be handed back to
    ``ObjectStoragePath`` as it is.
    """

    fs: Any
    path: str
    protocol: str
    conn_id: str | None = None

    @property
    def local(self) -> bool:
        return self.protocol in LOCAL_PROTOCOLS

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def uri(self) -> str:
        if self.local:
            return "file://" + self.path
        user = f"{self.conn_id}@" if self.conn_id else ""
        return f"{self.protocol}://{user}{self.path.lstrip('/')}"

    def sibling(self, name: str) -> Destination:
        """Another object in the same folder (companions, temporary objects)."""
        return Destination(
            self.fs, posixpath.join(posixpath.dirname(self.path), name), self.protocol, self.conn_id
        )


def split_destination(url: str) -> tuple[str, str | None, str, bool]:
    """``(protocol, conn_id, url without the conn id, names a folder)`` of a destination string.

    A bare absolute path is a local file; a trailing ``/`` names a folder. Nothing is contacted.
    """
    text = str(url).strip()
    if not text:
        raise ValueError(
            "destination is empty; give a URL such as file:///data/exports/ or s3://conn@bucket/key"
        )
    folder = text.endswith("/")
    if text.startswith("/"):
        return "file", None, "file://" + text, folder
    parts = urlsplit(text)
    if not parts.scheme or "://" not in text:
        raise ValueError(
            f"destination {text!r} is neither an absolute path nor a URL; use e.g. file:///data/exports/ "
            "or s3://aws_conn_id@bucket/prefix/"
        )
    protocol = parts.scheme.lower()
    conn_id, at, host = parts.netloc.rpartition("@")
    if protocol in LOCAL_PROTOCOLS:
        if host not in ("", "localhost"):
            raise ValueError(f"destination {text!r}: a file URL names no host; use file:///absolute/path")
        return "file", None, "file://" + parts.path, folder
    bare = f"{protocol}://{host}{parts.path}"
    if parts.query:
        bare += "?" + parts.query
    return protocol, (conn_id or None) if at else None, bare, folder


def resolve_destination(url: str, job_id: str, get_fs: Callable[[str, str | None], Any]) -> Destination:
    """The object to write for a destination string; a folder gets ``<job_id>.jsonl`` inside it.

    ``get_fs(protocol, conn_id)`` returns the fsspec filesystem (in Airflow, the connection's).
    """
    protocol, conn_id, bare, folder = split_destination(url)
    fs = get_fs(protocol, conn_id)
    path = fs._strip_protocol(bare) if protocol not in LOCAL_PROTOCOLS else bare[len("file://") :]
    return at_path(fs, path, protocol, conn_id, folder, job_id)


def at_path(fs: Any, path: str, protocol: str, conn_id: str | None, folder: bool, job_id: str) -> Destination:
    """A destination from a filesystem and a path in its terms (used for ``ObjectStoragePath`` too)."""
    protocol = protocol or "file"
    if protocol in LOCAL_PROTOCOLS:
        protocol = "file"
        if not path.startswith("/"):
            raise ValueError(f"a local destination must be an absolute path, got {path!r}")
        path = os.path.normpath(path)
        if not folder and os.path.isdir(path):
            raise ValueError(
                f"destination {path!r} is an existing folder; end it with '/' to export into it as "
                f"{file_name_for(job_id)}"
            )
    path = path.rstrip("/")
    if folder:
        path = f"{path}/{file_name_for(job_id)}"
    if not path or posixpath.basename(path) in ("", ".", ".."):
        raise ValueError(f"destination path {path!r} names no object")
    return Destination(fs, path, protocol, conn_id)


# ------------------------------------------------------------------------------------------ writing


def _temp_name(name: str) -> str:
    return f".{name}.tmp-{uuid.uuid4().hex}"


@contextlib.contextmanager
def atomic_writer(dest: Destination) -> Iterator[IO[bytes]]:
    """A binary file whose content appears at ``dest`` only if the ``with`` block ends without error.

    On error, nothing new is visible at ``dest`` (an older object stays as it was) and no temporary
    object is left behind.
    """
    if dest.local:
        with _local_writer(dest.path) as handle:
            yield handle
    elif dest.protocol in STAGED_PROTOCOLS:
        with _staged_writer(dest) as handle:
            yield handle
    else:
        with _moved_writer(dest) as handle:
            yield handle


@contextlib.contextmanager
def _local_writer(path: str) -> Iterator[IO[bytes]]:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, _temp_name(os.path.basename(path)))
    handle = open(temp, "xb")  # noqa: SIM115 - closed on both paths below
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temp, path)
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
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
def _staged_writer(dest: Destination) -> Iterator[IO[bytes]]:
    handle = dest.fs.open(dest.path, "wb", autocommit=False, block_size=STAGED_BLOCK_SIZE)
    try:
        yield handle
        handle.close()  # uploads the last part; nothing is visible yet
        handle.commit()  # one atomic step: the whole object appears
    except BaseException:
        # The order of fsspec's own transactions: close, then discard (aborts the staged upload).
        with contextlib.suppress(Exception):
            handle.close()
        handle.discard()
        raise


@contextlib.contextmanager
def _moved_writer(dest: Destination) -> Iterator[IO[bytes]]:
    fs = dest.fs
    temp = dest.sibling(_temp_name(dest.name)).path
    with contextlib.suppress(Exception):  # stores without folders have nothing to create
        fs.makedirs(posixpath.dirname(dest.path), exist_ok=True)
    try:
        with fs.open(temp, "wb") as handle:
            yield handle
        fs.mv(temp, dest.path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if fs.exists(temp):
                fs.rm(temp)


def write_bytes_atomic(dest: Destination, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``dest`` atomically; returns the number of bytes."""
    size = 0
    with atomic_writer(dest) as handle:
        for chunk in chunks:
            handle.write(chunk)
            size += len(chunk)
    return size


# ------------------------------------------------------------------------------------------ events


def _line_fields(line: bytes) -> tuple[Any, Any]:
    event = json.loads(line)
    return event.get("id"), event.get("created_at")


class ExportStats:
    """Count, size and the first and last event of a stream of JSON Lines blocks, without decoding it."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self._first: bytes | None = None
        self._last: bytes | None = None

    def add(self, block: bytes) -> None:
        if not block:
            return
        self.count += block.count(b"\n")
        self.bytes += len(block)
        if self._first is None:
            self._first = block[: block.index(b"\n") + 1]
        self._last = block[block.rfind(b"\n", 0, len(block) - 1) + 1 :]

    def manifest(self, uri: str, job_id: str, status: str) -> dict[str, Any]:
        first_id, first_at = _line_fields(self._first) if self._first else (None, None)
        last_id, last_at = _line_fields(self._last) if self._last else (None, None)
        return {
            "uri": uri,
            "job_id": job_id,
            "count": self.count,
            "first_event_id": first_id,
            "last_event_id": last_id,
            "first_created_at": first_at,
            "last_created_at": last_at,
            "status": status,
            "bytes": self.bytes,
        }


def collect_events(blocks: Iterable[bytes], max_events: int, job_id: str) -> list[dict[str, Any]]:
    """The events as a list for XCom, refusing more than ``max_events`` before holding them all."""
    events: list[dict[str, Any]] = []
    try:
        for block in blocks:
            for line in block.splitlines():
                if len(events) >= max_events:
                    raise XComLimitError(
                        f"Job {job_id} has more than max_xcom_events={max_events} events in the requested "
                        "window, too many to return as XCom. Set `destination` (for example "
                        "'s3://aws_conn_id@bucket/prefix/' or 'file:///data/exports/') to export them to "
                        "storage, narrow the window with created_after/created_before, or raise "
                        "max_xcom_events"
                    )
                events.append(json.loads(line))
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
    return events


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class MetricsCollector:
    """Keeps the metrics events of an export in a local temporary file, for the CSV and the loss plot.

    Memory stays flat: rows go to disk as they come; the column set (the union of the metrics keys) is
    only known at the end, so the CSV is written in a second pass over that file.
    """

    def __init__(self) -> None:
        self._rows = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._keys: dict[str, None] = {}
        self.count = 0

    def feed(self, block: bytes) -> None:
        if _METRICS_MARK not in block:
            return
        for line in block.splitlines():
            if _METRICS_MARK in line:
                event = json.loads(line)
                data = event.get("data")
                if event.get("type") == "metrics" and isinstance(data, Mapping):
                    self._keys.update(dict.fromkeys(data))
                    self._rows.write(json.dumps([event.get("created_at"), data]).encode() + b"\n")
                    self.count += 1

    def columns(self) -> list[str]:
        keys = set(self._keys)
        known = [c for c in METRIC_COLUMNS if c in keys or c in ("step", "created_at")]
        return known + sorted(keys - set(METRIC_COLUMNS))

    def _iter_rows(self) -> Iterator[tuple[Any, Mapping[str, Any]]]:
        self._rows.flush()
        self._rows.seek(0)
        for line in self._rows:
            created_at, data = json.loads(line)
            yield created_at, data

    def csv_chunks(self, rows_per_chunk: int = 2000) -> Iterator[bytes]:
        """The CSV, header first, one row per metrics event in event order."""
        columns = self.columns()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        pending = 1
        for created_at, data in self._iter_rows():
            writer.writerow([_cell(created_at) if c == "created_at" else _cell(data.get(c)) for c in columns])
            pending += 1
            if pending >= rows_per_chunk:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        if buffer.tell():
            yield buffer.getvalue().encode("utf-8")

    def loss_series(self, max_points: int = MAX_PLOT_POINTS) -> dict[str, tuple[list[float], list[float]]]:
        """``{metric: (steps, values)}`` for the loss metrics, each thinned to at most ``max_points``."""
        names = ("train_loss", "valid_loss", "full_valid_loss")
        totals = dict.fromkeys(names, 0)
        for _, data in self._iter_rows():
            for name in names:
                if _number(data.get(name)) is not None and _number(data.get("step")) is not None:
                    totals[name] += 1
        strides = {name: max(1, math.ceil(n / max_points)) for name, n in totals.items()}
        seen = dict.fromkeys(names, 0)
        series: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
        for _, data in self._iter_rows():
            step = _number(data.get("step"))
            for name in names:
                value = _number(data.get(name))
                if value is None or step is None:
                    continue
                index = seen[name]
                seen[name] += 1
                if index % strides[name] == 0 or seen[name] == totals[name]:
                    series[name][0].append(step)
                    series[name][1].append(value)
        return {name: points for name, points in series.items() if points[0]}

    def close(self) -> None:
        self._rows.close()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def require_matplotlib() -> None:
    """Fail before exporting anything when the plot was asked for but cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "loss_plot=True needs matplotlib, which is not installed on this worker; install it with "
            "`pip install 'airflow-ftevents[plot]'` or set loss_plot=False"
        ) from None


def loss_plot_png(series: Mapping[str, tuple[list[float], list[float]]], title: str) -> bytes:
    """A PNG of the training and validation loss by step (matplotlib's object API: no global state)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), dpi=100)
    axes = figure.subplots()
    styles = {
        "train_loss": {"label": "training loss", "linewidth": 1.0, "alpha": 0.8},
        "valid_loss": {"label": "validation loss", "linewidth": 1.5, "marker": ".", "markersize": 3},
        "full_valid_loss": {
            "label": "full validation loss",
            "linestyle": "none",
            "marker": "*",
            "markersize": 12,
        },
    }
    for name, (steps, values) in series.items():
        axes.plot(steps, values, **styles[name])
    if series:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no metrics events", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def export_events(
    blocks: Iterable[bytes],
    dest: Destination,
    *,
    job_id: str,
    status: str,
    metrics_csv: bool = False,
    loss_plot: bool = False,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict[str, Any]:
    """Stream JSON Lines blocks to ``dest`` atomically and return the manifest.

    The blocks are written as they are (the hook already made them compact, oldest first), one at a
    time, so memory does not grow with the job. Companions (``<stem>.metrics.csv``, ``<stem>.loss.png``)
    are published before the JSON Lines file, so its presence means the whole set is there.
    """
    log = log or logging.getLogger(__name__)
    if loss_plot:
        require_matplotlib()
    stats = ExportStats()
    metrics = MetricsCollector() if (metrics_csv or loss_plot) else None
    extra: dict[str, str] = {}
    started = time.monotonic()
    last_log: float | None = None  # the hook reports the reading; these lines report the writing
    try:
        with atomic_writer(dest) as handle:
            for block in blocks:
                handle.write(block)
                stats.add(block)
                if metrics is not None:
                    metrics.feed(block)
                now = time.monotonic()
                if last_log is None:
                    last_log = now
                elif now - last_log >= PROGRESS_EVERY:
                    last_log = now
                    log.info("Wrote %d events (%d bytes) of job %s so far", stats.count, stats.bytes, job_id)
            if metrics is not None and metrics_csv:
                target = dest.sibling(companion_name(dest.name, ".metrics.csv"))
                write_bytes_atomic(target, metrics.csv_chunks())
                extra["metrics_csv"] = target.uri
                log.info("Wrote %d metrics rows to %s", metrics.count, target.uri)
            if metrics is not None and loss_plot:
                target = dest.sibling(companion_name(dest.name, ".loss.png"))
                write_bytes_atomic(target, [loss_plot_png(metrics.loss_series(), f"Loss of {job_id}")])
                extra["loss_plot"] = target.uri
                log.info("Wrote the loss plot to %s", target.uri)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
        if metrics is not None:
            metrics.close()
    elapsed = time.monotonic() - started
    log.info(
        "Exported %d events (%d bytes) of job %s to %s in %.1f s (%.0f events/s)",
        stats.count,
        stats.bytes,
        job_id,
        dest.uri,
        elapsed,
        stats.count / max(elapsed, 1e-9),
    )
    return {**stats.manifest(dest.uri, job_id, status), **extra}
