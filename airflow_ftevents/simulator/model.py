"""Deterministic model of fine-tuning jobs and their events.

Event ``i`` of a job is a pure function of (job, i): nothing is stored per event, so a job with a million
events costs a few hundred bytes, and a page of ``limit`` events costs O(limit). Event ids encode their
index reversibly (keyed, so they look opaque and forged ids are detected), which resolves an ``after``
cursor in O(1). Wall time only decides how many events are visible and which status the job shows.
"""

from __future__ import annotations

import binascii
import hashlib
import math
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset(OUTCOMES)
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
ORGANIZATION_ID = "org-ftevents-simulator"
ORG_SLUG = "ftevents-sim"

PREAMBLE = 4  # created, validating, validated/queued, started
TAIL = 2  # the two closing events of every outcome
MIN_EVENTS = PREAMBLE + TAIL
BLOCK = 20  # every BLOCK-th event of the training phase is a checkpoint, warning or note, not a step
VALID_EVERY = 10  # steps that also report validation metrics
VIRTUAL_RATE = 10.0  # events per second of the made-up past of a job that is already finished

# Fractions of the job's duration at which the phases begin (validating_files starts at 0).
QUEUED_AT = 0.1
RUNNING_AT = 0.2
PAUSED_FROM, PAUSED_TO = 0.5, 0.55  # realistic mode only: a short `paused` moment while running

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_DIGITS = b"q4XkT9bLm2RvW7cH"  # 16 distinct alphanumerics of both cases: the digits of event ids
_INDEX = {c: n for n, c in enumerate(_ALPHABET)}
_MASK64 = (1 << 64) - 1

_WARNINGS = (
    "Training loss at step {s} is above the recent average; continuing",
    "Validation loss did not improve over the last {v} evaluations",
    "Some training examples were truncated to the model's context length",
    "Learning rate warm-up finished later than expected at step {s}",
)
_NOTES = (
    "Evaluating on the validation set at step {s}",
    "Processed {e} training examples so far",
    "Usage policy checks passed for the data seen up to step {s}",
)
_FAILURES = (
    ("server_error", None, "Fine-tuning job failed due to an internal error. Please try again."),
    (
        "invalid_training_file",
        "training_file",
        "The training file has an example at line 17 that is not valid JSON",
    ),
    ("exceeded_quota", None, "The job exceeded your organization's fine-tuning quota for tokens"),
)


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # two base62 digits per divmod: ids cost half


def b62(number: int, width: int) -> str:
    """Fixed-width base62 text of a non-negative int (taken modulo 62**width), so ids keep one length."""
    parts = []
    for _ in range(width // 2):
        number, rem = divmod(number, 3844)
        parts.append(_PAIRS[rem])
    if width % 2:
        parts.append(_ALPHABET[number % 62])
    return "".join(reversed(parts))


def unb62(text: str) -> int | None:
    """Inverse of :func:`b62`; ``None`` for text that is not base62."""
    number = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            return None
        number = number * 62 + digit
    return number


def random_alnum(length: int) -> str:
    """Random id text, for jobs created over HTTP (real ids are random too)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _mix(value: int) -> int:
    """splitmix64 finalizer: a cheap, well-spread 64-bit hash of an int."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _unit(seed: int, salt: int, index: int) -> float:
    """Deterministic number in [0, 1) for (seed, salt, index): the simulator's only randomness."""
    return _mix(_mix(seed * 1_000_003 + salt) ^ index) / 2.0**64


def _salted(seed: int, salt: int) -> int:
    """Precomputed first half of :func:`_unit`, so per-event draws cost one mix."""
    return _mix(seed * 1_000_003 + salt)


def _digest(text: str, size: int = 8) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big")


def _hashed_id(text: str, length: int = 24) -> str:
    """A stable, random-looking base62 id derived from ``text``."""
    return b62(_digest(text, 20) % 62**length, length)


class EventIdCodec:
    """Turns an event index into an opaque ``ftevent-`` id and back, in O(1).

    96 bits: a 32-bit keyed hash of the index (the check) and the index masked by a keyed hash of the
    check (a two-round Feistel network), written as 24 characters of a mixed-case alphanumeric base16
    (C hex encoding plus a translation table: ids are a large share of the cost of a page). Decoding
    re-encodes and compares, so an id of another job, or a made-up one, is recognised as unknown.
    Integer mixing rather than a cryptographic hash: ids are opaque, not secret.
    """

    PREFIX = "ftevent-"
    _TO_ID = bytes.maketrans(b"0123456789abcdef", _ID_DIGITS)
    _FROM_ID = bytes.maketrans(_ID_DIGITS, b"0123456789abcdef")

    def __init__(self, secret: str) -> None:
        self._k1 = _digest(f"check:{secret}")
        self._k2 = _digest(f"mask:{secret}")

    def encode(self, index: int) -> str:
        check = _mix(index ^ self._k1) >> 32
        payload = (check << 64 | (index ^ _mix(check ^ self._k2))).to_bytes(12, "big")
        return self.PREFIX + binascii.hexlify(payload).translate(self._TO_ID).decode()

    def decode(self, event_id: str) -> int | None:
        """Index of the event with this id, or ``None`` when the id is not one of this job's."""
        if len(event_id) != len(self.PREFIX) + 24 or not event_id.startswith(self.PREFIX):
            return None
        try:
            raw = event_id[len(self.PREFIX) :].encode("ascii").translate(self._FROM_ID)
            payload = int.from_bytes(binascii.unhexlify(raw), "big")
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return None
        index = (payload & _MASK64) ^ _mix((payload >> 64) ^ self._k2)
        if index >= 1 << 63 or self.encode(index) != event_id:
            return None
        return index


@dataclass
class JobSpec:
    """The shape of a simulated job: how many events, how long it runs, how it ends.

    ``duration=0`` makes a job that finished before it was added (all events visible at once, with
    timestamps in the recent past); ``duration>0`` plays the lifecycle over that many wall-clock seconds.
    """

    job_id: str | None = None
    n_events: int = 200
    duration: float = 0.0
    outcome: str = "succeeded"
    model: str = DEFAULT_MODEL
    seed: int | None = None
    training_file: str | None = None
    validation_file: str | None = None
    suffix: str | None = None
    metadata: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if isinstance(self.n_events, bool) or not isinstance(self.n_events, int):
            raise ValueError(f"n_events must be an int, got {self.n_events!r}")
        if self.n_events < MIN_EVENTS:
            raise ValueError(f"n_events must be at least {MIN_EVENTS}, got {self.n_events}")
        if (
            not (isinstance(self.duration, (int, float)) and math.isfinite(self.duration))
            or self.duration < 0
        ):
            raise ValueError(f"duration must be a finite number of seconds >= 0, got {self.duration!r}")
        if self.job_id is not None and (not isinstance(self.job_id, str) or not self.job_id):
            raise ValueError(f"job_id must be a non-empty string, got {self.job_id!r}")


@dataclass
class Snapshot:
    """What a job looks like at one instant: read once, so one response is self-consistent."""

    visible: int
    status: str
    terminal: bool
    next_in: float | None  # seconds until one more event appears, None when none will


@dataclass
class Job:
    """One simulated job: its spec, its clock origin and, once cancelled, where its events were cut."""

    spec: JobSpec
    job_id: str
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    cut: int | None = None
    cancelled_wall: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        spec = self.spec
        self.seed = spec.seed if spec.seed is not None else _digest(f"seed:{self.job_id}") % (2**31)
        self.n = spec.n_events
        self.middle = self.n - PREAMBLE - TAIL
        self.total_steps = self.middle - self.middle // BLOCK
        self.live = spec.duration > 0
        self.span = float(spec.duration) if self.live else max(60.0, self.n / VIRTUAL_RATE)
        self.start_mono = self.clock()
        now_wall = self.wall()
        self.base_wall = now_wall if self.live else now_wall - self.span
        self.codec = EventIdCodec(f"{self.job_id}\x00{self.seed}")
        self.training_file = spec.training_file or "file-" + _hashed_id("train:" + self.job_id)
        self.validation_file = spec.validation_file
        self.batch_size = (1, 2, 4, 8)[self.seed % 4]
        self.learning_rate = (0.5, 1.0, 1.8, 2.0)[(self.seed >> 2) % 4]
        self.n_epochs = 3
        suffix = spec.suffix or ""
        self.fine_tuned_name = f"ft:{spec.model}:{ORG_SLUG}:{suffix}:{_hashed_id('ft:' + self.job_id, 8)}"
        self.result_file = "file-" + _hashed_id("result:" + self.job_id)
        self.failure = _FAILURES[self.seed % len(_FAILURES)]
        self.loss_start = 2.2 + 1.2 * _unit(self.seed, 1, 0)
        self.loss_floor = 0.05 + 0.25 * _unit(self.seed, 2, 0)
        self.loss_decay = 3.0 + 3.0 * _unit(self.seed, 3, 0)
        self._salts = {salt: _salted(self.seed, salt) for salt in (10, 12, 13, 20)}

    def _draw(self, salt: int, index: int) -> float:
        """Same as ``_unit(self.seed, salt, index)``, cheaper."""
        return _mix(self._salts[salt] ^ index) / 2.0**64

    # ----------------------------------------------------------------- time and status
    def _fraction(self, index: int) -> float:
        """When event ``index`` appears, as a fraction of the job's span (original layout)."""
        if index < 2:
            return 0.0
        if index == 2:
            return QUEUED_AT
        if index == 3:
            return RUNNING_AT
        j = index - PREAMBLE
        if j < self.middle:
            return RUNNING_AT + (1.0 - RUNNING_AT) * (j + 1) / (self.middle + 1)
        return 1.0

    def _progress(self, now: float | None) -> float:
        if not self.live:
            return 1.0
        now = self.clock() if now is None else now
        return (now - self.start_mono) / self.span

    def total(self) -> int:
        """Number of events the job will have in the end."""
        return self.n if self.cut is None else self.cut + TAIL

    def snapshot(self, now: float | None = None, realistic: bool = False) -> Snapshot:
        """Visible event count, status and time to the next event, all at one instant."""
        with self.lock:
            if self.cut is not None:
                return Snapshot(self.cut + TAIL, "cancelled", True, None)
            x = self._progress(now)
        if x >= 1.0:
            return Snapshot(self.n, self.spec.outcome, True, None)
        if x < QUEUED_AT:
            visible, status = 2, "validating_files"
        elif x < RUNNING_AT:
            visible, status = 3, "queued"
        else:
            q = (x - RUNNING_AT) / (1.0 - RUNNING_AT) * (self.middle + 1)
            visible, status = PREAMBLE + min(self.middle, math.floor(q)), "running"
            if realistic and PAUSED_FROM <= x < PAUSED_TO:
                status = "paused"
        next_in = max(0.0, (self._fraction(visible) - x) * self.span)
        return Snapshot(visible, status, False, next_in)

    def cancel(self, now: float | None = None) -> bool:
        """Cut the job where it stands; ``False`` when it had already finished."""
        snap = self.snapshot(now)
        if snap.terminal:
            return False
        with self.lock:
            if self.cut is not None:
                return False
            self.cut = snap.visible
            self.cancelled_wall = self.wall()
        return True

    def created_at(self) -> int:
        return int(self.base_wall)

    def _event_time(self, index: int) -> int:
        if self.cut is not None and index >= self.cut:
            return int(self.cancelled_wall or self.base_wall)
        return int(self.base_wall + self._fraction(index) * self.span)

    def finished_at(self) -> int:
        if self.cut is not None:
            return int(self.cancelled_wall or self.base_wall)
        return int(self.base_wall + self.span)

    # ----------------------------------------------------------------- events
    def event_id(self, index: int) -> str:
        return self.codec.encode(index)

    def index_of(self, event_id: str) -> int | None:
        return self.codec.decode(event_id)

    def _metrics(self, step: int) -> tuple[str, dict[str, Any]]:
        """Step ``step`` (1-based): a noisy, decreasing loss, and the message that quotes it."""
        steps = self.total_steps
        progress = (step - 1) / max(1, steps - 1)
        trend = self.loss_floor + (self.loss_start - self.loss_floor) * math.exp(-self.loss_decay * progress)
        bits = _mix(self._salts[10] ^ step)  # one draw: noise from the high bits, rare spikes from the low
        noise = (bits >> 11) / 2.0**53
        spike = 1.6 if bits & 1023 < 20 else 1.0
        train_loss = round(trend * (0.75 + 0.5 * noise) * spike, 4)
        data: dict[str, Any] = {
            "step": step,
            "train_loss": train_loss,
            "total_steps": steps,
            "train_mean_token_accuracy": round(min(0.999, max(0.0, 1.0 - 0.3 * train_loss)), 4),
        }
        message = f"Step {step}/{steps}: training loss={train_loss:.4f}"
        if step % VALID_EVERY == 0 or step == steps:
            valid_loss = round(trend * (1.0 + 0.3 * self._draw(12, step)), 4)
            data["valid_loss"] = valid_loss
            data["valid_mean_token_accuracy"] = round(min(0.999, max(0.0, 1.0 - 0.32 * valid_loss)), 4)
            message += f", validation loss={valid_loss:.4f}"
        if step == steps:
            full_valid = round(trend * (1.05 + 0.1 * self._draw(13, step)), 4)
            data["full_valid_loss"] = full_valid
            data["full_valid_mean_token_accuracy"] = round(min(0.999, max(0.0, 1.0 - 0.32 * full_valid)), 4)
            message += f", full validation loss={full_valid:.4f}"
        return message, data

    def _content(self, index: int, realistic: bool) -> tuple[str, str, str, dict[str, Any] | None]:
        """(level, message, type, data) of event ``index``."""
        if self.cut is not None and index >= self.cut:
            return (
                "info",
                ("Job cancellation requested", "Job was cancelled")[index - self.cut],
                "message",
                {},
            )
        if index < PREAMBLE:
            if index == 0:
                return "info", f"Created fine-tuning job: {self.job_id}", "message", {}
            if index == 1:
                text = f"Validating training file: {self.training_file}"
                if self.validation_file:
                    text += f" and validation file: {self.validation_file}"
                return "info", text, "message", {}
            if index == 2:
                return "info", "Files validated, moving job to queued state", "message", {}
            return "info", "Fine-tuning job started", "message", None if realistic else {}
        j = index - PREAMBLE
        if j < self.middle:
            if j % BLOCK != BLOCK - 1:
                message, data = self._metrics(j + 1 - (j + 1) // BLOCK)
                return "info", message, "metrics", data
            block, done = j // BLOCK, j + 1 - (j + 1) // BLOCK
            if block % 5 == 4:
                name = f"{self.fine_tuned_name}:ckpt-step-{done}"
                return "info", f"Checkpoint created at step {done} with Snapshot ID: {name}", "message", {}
            pick = self._draw(20, block)
            if pick < 0.35:
                text = _WARNINGS[int(pick / 0.35 * len(_WARNINGS))]
                return "warn", text.format(s=done, v=3), "message", {}
            text = _NOTES[int((pick - 0.35) / 0.65 * len(_NOTES))]
            return "info", text.format(s=done, e=done * self.batch_size), "message", {}
        last = index - PREAMBLE - self.middle
        outcome = self.spec.outcome
        if outcome == "succeeded":
            if last == 0:
                return "info", f"New fine-tuned model created: {self.fine_tuned_name}", "message", {}
            return "info", "The job has successfully completed", "message", {}
        if outcome == "failed":
            code, param, text = self.failure
            if last == 0:
                return "error", text, "message", {"error_code": code, "error_param": param}
            return "error", "The job has failed", "message", {}
        return "info", ("Job cancellation requested", "Job was cancelled")[last], "message", {}

    def event(self, index: int, realistic: bool = False) -> dict[str, Any]:
        """Current-API event ``index`` exactly as the server serializes it."""
        level, message, kind, data = self._content(index, realistic)
        event: dict[str, Any] = {
            "object": "fine_tuning.job.event",
            "id": self.codec.encode(index),
            "created_at": self._event_time(index),
            "level": level,
            "message": message,
            "data": data,
            "type": kind,
        }
        if realistic:
            event["metadata"] = {}
        return event

    def legacy_event(self, index: int) -> dict[str, Any]:
        """Legacy event ``index``: the same moment, without id, type or data."""
        level, message, _kind, _data = self._content(index, False)
        return {
            "object": "fine-tune-event",
            "created_at": self._event_time(index),
            "level": level,
            "message": message,
        }

    def page(
        self, visible: int, before: int, limit: int, realistic: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest-first page of the events older than index ``before`` (``visible`` for the newest)."""
        top = min(before, visible) - 1
        bottom = max(0, top - limit + 1)
        events = [self.event(i, realistic) for i in range(top, bottom - 1, -1)]
        return events, bottom > 0

    # ----------------------------------------------------------------- job objects
    def job_object(self, snap: Snapshot, realistic: bool = False) -> dict[str, Any]:
        """Current-API ``fine_tuning.job`` object at the instant of ``snap``."""
        status = snap.status
        succeeded = status == "succeeded"
        failed = status == "failed"
        hyper = {
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate,
            "n_epochs": self.n_epochs,
        }
        job: dict[str, Any] = {
            "object": "fine_tuning.job",
            "id": self.job_id,
            "model": self.spec.model,
            "created_at": self.created_at(),
            "finished_at": self.finished_at() if snap.terminal else None,
            "fine_tuned_model": self.fine_tuned_name if succeeded else None,
            "organization_id": ORGANIZATION_ID,
            "result_files": [self.result_file] if succeeded else [],
            "status": status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "hyperparameters": dict(hyper),
            "trained_tokens": self.total_steps * self.batch_size * 512 if succeeded else None,
            "error": (
                {"code": self.failure[0], "message": self.failure[2], "param": self.failure[1]}
                if failed
                else None
            ),
            "integrations": [],
            "seed": self.seed,
            "estimated_finish": None if snap.terminal or not self.live else self.finished_at(),
            "method": {"type": "supervised", "supervised": {"hyperparameters": dict(hyper)}},
            "metadata": dict(self.spec.metadata) if self.spec.metadata else None,
        }
        if realistic:
            job["user_provided_suffix"] = self.spec.suffix
            job["usage_metrics"] = None
        return job

    def _file(self, file_id: str, purpose: str, filename: str) -> dict[str, Any]:
        return {
            "id": file_id,
            "object": "file",
            "bytes": 1000 + _digest(file_id) % 900_000,
            "created_at": self.created_at(),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def legacy_object(self, snap: Snapshot) -> dict[str, Any]:
        """Legacy ``fine-tune`` object at the instant of ``snap`` (its events are left out)."""
        status = {"validating_files": "pending", "queued": "pending", "paused": "running"}.get(
            snap.status, snap.status
        )
        succeeded = status == "succeeded"
        updated = self._event_time(snap.visible - 1) if snap.visible else self.created_at()
        return {
            "object": "fine-tune",
            "id": self.job_id,
            "created_at": self.created_at(),
            "updated_at": updated,
            "model": self.spec.model,
            "fine_tuned_model": self.fine_tuned_name if succeeded else None,
            "organization_id": ORGANIZATION_ID,
            "status": status,
            "hyperparams": {
                "batch_size": self.batch_size,
                "learning_rate_multiplier": self.learning_rate,
                "n_epochs": self.n_epochs,
                "prompt_loss_weight": 0.01,
            },
            "result_files": (
                [self._file(self.result_file, "fine-tune-results", "compiled_results.csv")]
                if succeeded
                else []
            ),
            "training_files": [self._file(self.training_file, "fine-tune", "train.jsonl")],
            "validation_files": (
                [self._file(self.validation_file, "fine-tune", "valid.jsonl")] if self.validation_file else []
            ),
        }
