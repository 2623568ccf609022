"""Writing an export: JSON Lines published atomically on any fsspec filesystem, plus its companions.

No Airflow here: the operator resolves its ``destination`` to a filesystem and a path, then hands the
event blocks of :meth:`FineTuneEventsHook.iter_event_blocks` to :func:`export_events`, so everything that
decides what lands in storage is tested without Airflow machinery. One module per concept:

- :mod:`.destination`: a URL, folder or filesystem path resolved into the one object to write;
- :mod:`.publish`: an object published whole or not at all (rename, staged upload, moved temporary);
- :mod:`.companions`: the metrics CSV and the loss plot;
- :mod:`.events`: the events streamed with their manifest, or collected for XCom.

The JSON Lines format itself is :mod:`airflow_ftevents.core.jsonl`'s, shared with the hook's spool.
"""

from __future__ import annotations

from airflow_ftevents.errors import ExportDestinationError
from airflow_ftevents.export.companions import (
    LOSS_PLOT_SUFFIX,
    MAX_PLOT_POINTS,
    METRIC_COLUMNS,
    METRICS_CSV_SUFFIX,
    MetricsCollector,
    companion_name,
    loss_plot_png,
    publish_companions,
    require_matplotlib,
)
from airflow_ftevents.export.destination import (
    INSTALL_FOR_SCHEME,
    LOCAL_PROTOCOLS,
    Destination,
    at_path,
    file_name_for,
    missing_filesystem_error,
    open_filesystem,
    resolve_destination,
    split_destination,
)
from airflow_ftevents.export.events import (
    MANIFEST_KEYS,
    PROGRESS_EVERY,
    ExportStats,
    XComLimitError,
    collect_events,
    export_events,
)
from airflow_ftevents.export.publish import (
    STAGED_BLOCK_SIZE,
    STAGED_PROTOCOLS,
    ExportSink,
    atomic_writer,
    destination_error,
    write_bytes_atomic,
)

__all__ = [
    "INSTALL_FOR_SCHEME",
    "LOCAL_PROTOCOLS",
    "LOSS_PLOT_SUFFIX",
    "MANIFEST_KEYS",
    "MAX_PLOT_POINTS",
    "METRICS_CSV_SUFFIX",
    "METRIC_COLUMNS",
    "PROGRESS_EVERY",
    "STAGED_BLOCK_SIZE",
    "STAGED_PROTOCOLS",
    "Destination",
    "ExportDestinationError",
    "ExportSink",
    "ExportStats",
    "MetricsCollector",
    "XComLimitError",
    "at_path",
    "atomic_writer",
    "collect_events",
    "companion_name",
    "destination_error",
    "export_events",
    "file_name_for",
    "loss_plot_png",
    "missing_filesystem_error",
    "open_filesystem",
    "publish_companions",
    "require_matplotlib",
    "resolve_destination",
    "split_destination",
    "write_bytes_atomic",
]
