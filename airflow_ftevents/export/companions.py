"""The companions of an export: ``<stem>.metrics.csv`` and ``<stem>.loss.png``, from its metrics events.

The metrics events are kept in a local temporary file while the export streams (memory stays flat);
the CSV and the plot are made from that file once the column set is known.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_ftevents.core.jsonl import decode_line, field_mark
from airflow_ftevents.export.destination import Destination
from airflow_ftevents.export.publish import write_bytes_atomic

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
METRICS_CSV_SUFFIX = ".metrics.csv"
LOSS_PLOT_SUFFIX = ".loss.png"
_METRICS_MARK = field_mark("type", "metrics")  # cheap pre-filter before decoding a line


def companion_name(name: str, suffix: str) -> str:
    """``ftjob-1.jsonl`` -> ``ftjob-1.metrics.csv``: the companions share the JSON Lines file's stem."""
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") and len(name) > len(".jsonl") else name
    return stem + suffix


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
                event = decode_line(line)
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


def publish_companions(
    metrics: MetricsCollector,
    dest: Destination,
    *,
    job_id: str,
    metrics_csv: bool,
    loss_plot: bool,
    log: logging.Logger | logging.LoggerAdapter,
) -> dict[str, str]:
    """Publish the asked-for companions next to ``dest``; returns their manifest entries (URIs)."""
    extra: dict[str, str] = {}
    if metrics_csv:
        target = dest.sibling(companion_name(dest.name, METRICS_CSV_SUFFIX))
        write_bytes_atomic(target, metrics.csv_chunks())
        extra["metrics_csv"] = target.uri
        log.info("Wrote %d metrics rows to %s", metrics.count, target.uri)
    if loss_plot:
        target = dest.sibling(companion_name(dest.name, LOSS_PLOT_SUFFIX))
        write_bytes_atomic(target, [loss_plot_png(metrics.loss_series(), f"Loss of {job_id}")])
        extra["loss_plot"] = target.uri
        log.info("Wrote the loss plot to %s", target.uri)
    return extra
