"""The events of an export: streamed to a destination with their manifest, or collected for XCom.

The blocks come from :meth:`FineTuneEventsHook.iter_event_blocks` (JSON Lines, oldest first, see
:mod:`airflow_ftevents.core.jsonl`) and are written as they are, one at a time, so memory does not grow
with the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from airflow_ftevents.core.jsonl import count_lines, first_line, id_and_created_at, iter_block, last_line
from airflow_ftevents.export.companions import MetricsCollector, publish_companions, require_matplotlib
from airflow_ftevents.export.destination import Destination
from airflow_ftevents.export.publish import atomic_writer

PROGRESS_EVERY = 10.0  # seconds between progress lines in the task log

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


class XComLimitError(ValueError):
    """More events than ``max_xcom_events``: they belong in a file, not in the metadata database."""


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
        self.count += count_lines(block)
        self.bytes += len(block)
        if self._first is None:
            self._first = first_line(block)
        self._last = last_line(block)

    def manifest(self, uri: str, job_id: str, status: str) -> dict[str, Any]:
        first_id, first_at = id_and_created_at(self._first) if self._first else (None, None)
        last_id, last_at = id_and_created_at(self._last) if self._last else (None, None)
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


def _close(blocks: Iterable[bytes]) -> None:
    close = getattr(blocks, "close", None)
    if close is not None:
        close()


def collect_events(blocks: Iterable[bytes], max_events: int, job_id: str) -> list[dict[str, Any]]:
    """The events as a list for XCom, refusing more than ``max_events`` before holding them all."""
    events: list[dict[str, Any]] = []
    try:
        for block in blocks:
            for event in iter_block(block):
                if len(events) >= max_events:
                    raise XComLimitError(
                        f"Job {job_id} has more than max_xcom_events={max_events} events in the requested "
                        "window, too many to return as XCom. Set `destination` (for example "
                        "'s3://aws_conn_id@bucket/prefix/' or 'file:///data/exports/') to export them to "
                        "storage, narrow the window with created_after/created_before, or raise "
                        "max_xcom_events"
                    )
                events.append(event)
    finally:
        _close(blocks)
    return events


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

    The blocks are written as they are (the hook already made them compact, oldest first). Companions
    (``<stem>.metrics.csv``, ``<stem>.loss.png``) are published before the JSON Lines file, so its
    presence means the whole set is there. On any failure the JSON Lines file is not published and no
    temporary object is left; the store's own failures are :class:`ExportDestinationError`.
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
        with atomic_writer(dest) as sink:
            for block in blocks:
                sink.write(block)
                stats.add(block)
                if metrics is not None:
                    metrics.feed(block)
                now = time.monotonic()
                if last_log is None:
                    last_log = now
                elif now - last_log >= PROGRESS_EVERY:
                    last_log = now
                    log.info("Wrote %d events (%d bytes) of job %s so far", stats.count, stats.bytes, job_id)
            if metrics is not None:
                extra = publish_companions(
                    metrics, dest, job_id=job_id, metrics_csv=metrics_csv, loss_plot=loss_plot, log=log
                )
    finally:
        _close(blocks)
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
