"""Deterministic model of fine-tuning jobs and their events.

Event ``i`` of a job is a pure function of (job, i): nothing is stored per event, so a job with a million
events costs a few hundred bytes, and a page of ``limit`` events costs O(limit). Event ids encode their
index reversibly (keyed, so they look opaque and forged ids are detected), which resolves an ``after``
cursor in O(1). Wall time only decides how many events are visible and which status the job shows.
What is done to a job later is a few numbers, not events: a cancel or "finish now" records where the
events end, a pause the span it lasted (later events move by it). Checkpoints are the last three epoch
ends, listed once training has reached them.
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
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset(OUTCOMES)
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
ORGANIZATION_ID = "org-ftevents-simulator"
ORG_SLUG = "ftevents-sim"

PREAMBLE = 4  # created, validating, validated/queued, started
TAIL = 2  # the two closing events of every outcome
MIN_EVENTS = PREAMBLE + TAIL
BLOCK = 20  # every BLOCK-th event of the training phase is a checkpoint notice, warning or note, not a step
VALID_EVERY = 10  # steps that also report validation metrics
VIRTUAL_RATE = 10.0  # events per second of the made-up past of a job that is already finished

# Fractions of the job's duration at which the phases begin (validating_files starts at 0).
QUEUED_AT = 0.1
RUNNING_AT = 0.2
PAUSED_FROM, PAUSED_TO = 0.5, 0.55  # realistic mode only: a short `paused` moment while running

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_DIGITS = b"q4XkT9bLm2RvW7cH"  # 16 distinct alphanumerics of both cases: the digits of event ids
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


def hashed_id(text: str, length: int = 24) -> str:
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
    ``created_ago`` moves the job's creation that many seconds into the past (old jobs of an account).
    ``method``, ``hyperparameters`` and ``integrations`` are the create request's fields, echoed back with
    ``"auto"`` resolved to the values the job uses.
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
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    integrations: list[dict[str, Any]] | None = None
    created_ago: float = 0.0

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if isinstance(self.n_events, bool) or not isinstance(self.n_events, int):
            raise ValueError(f"n_events must be an int, got {self.n_events!r}")
        if self.n_events < MIN_EVENTS:
            raise ValueError(f"n_events must be at least {MIN_EVENTS}, got {self.n_events}")
        for name in ("duration", "created_ago"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if self.job_id is not None and (not isinstance(self.job_id, str) or not self.job_id):
            raise ValueError(f"job_id must be a non-empty string, got {self.job_id!r}")


@dataclass
class Snapshot:
    """What a job looks like at one instant: read once, so one response is self-consistent."""

    visible: int
    status: str
    terminal: bool
    next_in: float | None  # seconds until one more event appears, None when none will


class NotAllowed(ValueError):
    """A job operation that the job's current status does not allow (cancel a finished job, ...)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def _step_index(step: int) -> int:
    """Event index of the metrics event of training step ``step`` (1-based), as laid out by ``_content``."""
    return PREAMBLE + step + (step - 1) // (BLOCK - 1) - 1


class Job:
    """One simulated job: its spec, its clock origin and what was done to it (cancel, finish, pause).

    Mutable state is small and read under ``lock``: where the events were cut (cancel or finish now) and
    with which outcome, the pauses so far (each shifts the times of the events after it), and whether it
    is paused now.
    """

    def __init__(
        self,
        spec: JobSpec,
        job_id: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        origin: tuple[float, float] | None = None,
    ) -> None:
        self.spec = spec
        self.job_id = job_id
        self.clock = clock
        self.wall = wall
        self.lock = threading.Lock()
        self.outcome = spec.outcome
        self.cut: int | None = None  # events from this index on are the two closing events of `outcome`
        self.cut_wall: float | None = None
        self.forced_from: int | None = None  # "finish now": events from this index on happen at forced_wall
        self.forced_wall: float | None = None
        self.paused_since: float | None = None  # clock() when paused, None when not paused
        self.paused_total = 0.0
        self.shifts: list[tuple[float, float]] = []  # (fraction where a pause began, its seconds)
        self.seed = spec.seed if spec.seed is not None else _digest(f"seed:{job_id}") % (2**31)
        self.n = spec.n_events
        self.middle = self.n - PREAMBLE - TAIL
        self.total_steps = self.middle - self.middle // BLOCK
        self.live = spec.duration > 0
        self.span = float(spec.duration) if self.live else max(60.0, self.n / VIRTUAL_RATE)
        origin_mono, origin_wall = origin if origin is not None else (clock(), wall())
        self.start_mono = origin_mono - spec.created_ago
        if self.live:
            self.base_wall = origin_wall - spec.created_ago
        else:
            self.base_wall = origin_wall - max(spec.created_ago, self.span)
        self.codec = EventIdCodec(f"{job_id}\x00{self.seed}")
        self.training_file = spec.training_file or "file-" + hashed_id("train:" + job_id)
        self.validation_file = spec.validation_file
        self.method_type = str((spec.method or {}).get("type") or "supervised")
        given = self._given_hyperparameters()
        self.batch_size = _pick_int(given.get("batch_size"), (1, 2, 4, 8)[self.seed % 4])
        self.learning_rate = _pick_number(
            given.get("learning_rate_multiplier"), (0.5, 1.0, 1.8, 2.0)[(self.seed >> 2) % 4]
        )
        self.n_epochs = _pick_int(given.get("n_epochs"), 3)
        suffix = spec.suffix or ""
        self.fine_tuned_name = f"ft:{spec.model}:{ORG_SLUG}:{suffix}:{hashed_id('ft:' + job_id, 8)}"
        self.result_file = "file-" + hashed_id("result:" + job_id)
        self.failure = _FAILURES[self.seed % len(_FAILURES)]
        self.loss_start = 2.2 + 1.2 * _unit(self.seed, 1, 0)
        self.loss_floor = 0.05 + 0.25 * _unit(self.seed, 2, 0)
        self.loss_decay = 3.0 + 3.0 * _unit(self.seed, 3, 0)
        self._salts = {salt: _salted(self.seed, salt) for salt in (10, 12, 13, 20)}
        # The last three epochs end in a checkpoint (the API keeps no more): step -> event index.
        steps = self.total_steps
        epochs = range(max(1, self.n_epochs - 2), self.n_epochs + 1)
        self.checkpoint_steps = sorted(
            {math.ceil(e * steps / self.n_epochs) for e in epochs} if steps else ()
        )
        # The block event right after a checkpoint's step announces it: block number -> step.
        self._checkpoint_blocks = {
            math.ceil(step / (BLOCK - 1)) - 1: step
            for step in self.checkpoint_steps
            if math.ceil(step / (BLOCK - 1)) - 1 < self.middle // BLOCK
        }

    def _given_hyperparameters(self) -> dict[str, Any]:
        method = self.spec.method or {}
        section = method.get(self.method_type) if isinstance(method.get(self.method_type), dict) else {}
        from_method = section.get("hyperparameters") if isinstance(section, dict) else None
        return dict(from_method or self.spec.hyperparameters or {})

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

    def _progress(self, now: float) -> float:
        """Fraction of the span played so far (paused time does not count); call with ``lock`` held."""
        if not self.live:
            return 1.0
        paused = self.paused_total + (now - self.paused_since if self.paused_since is not None else 0.0)
        return (now - self.start_mono - paused) / self.span

    def total(self) -> int:
        """Number of events the job will have in the end."""
        with self.lock:
            return self.n if self.cut is None else self.cut + TAIL

    def snapshot(self, now: float | None = None, realistic: bool = False) -> Snapshot:
        """Visible event count, status and time to the next event, all at one instant."""
        now = self.clock() if now is None else now
        with self.lock:
            if self.cut is not None:
                return Snapshot(self.cut + TAIL, self.outcome, True, None)
            if self.forced_from is not None:
                return Snapshot(self.n, self.outcome, True, None)
            x = self._progress(now)
            paused = self.paused_since is not None
        if x >= 1.0:
            return Snapshot(self.n, self.outcome, True, None)
        if x < QUEUED_AT:
            visible, status = 2, "validating_files"
        elif x < RUNNING_AT:
            visible, status = 3, "queued"
        else:
            q = (x - RUNNING_AT) / (1.0 - RUNNING_AT) * (self.middle + 1)
            visible, status = PREAMBLE + min(self.middle, math.floor(q)), "running"
            if realistic and PAUSED_FROM <= x < PAUSED_TO:
                status = "paused"
        if paused:
            return Snapshot(visible, "paused", False, None)
        next_in = max(0.0, (self._fraction(visible) - x) * self.span)
        return Snapshot(visible, status, False, next_in)

    def cancel(self, now: float | None = None) -> None:
        """Cut the job where it stands: two closing events follow; :class:`NotAllowed` once finished."""
        self.finish("cancelled", now)

    def finish(self, outcome: str, now: float | None = None) -> None:
        """End the job now with ``outcome``; :class:`NotAllowed` when it has already finished.

        ``cancelled`` cuts the events where they stand (as a cancel does); ``succeeded`` and ``failed``
        play every remaining event at once, so the job ends complete (all steps, all checkpoints).
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        snap = self.snapshot(now)
        with self.lock:
            if snap.terminal or self.cut is not None or self.forced_from is not None:
                raise NotAllowed(
                    f"Job {self.job_id} has already completed with status {snap.status!r}.", snap.status
                )
            self._end_pause(self.clock() if now is None else now)
            self.outcome = outcome
            if outcome == "cancelled":
                self.cut, self.cut_wall = snap.visible, self.wall()
            else:
                self.forced_from, self.forced_wall = snap.visible, self.wall()

    def pause(self, now: float | None = None) -> None:
        """Stop the clock of a running job (status ``paused``); :class:`NotAllowed` in any other status."""
        now = self.clock() if now is None else now
        snap = self.snapshot(now)
        with self.lock:
            if snap.status != "running" or self.paused_since is not None or self.cut is not None:
                raise NotAllowed(
                    f"Job {self.job_id} is {snap.status!r}; only a running job can be paused.", snap.status
                )
            self.paused_since = now

    def resume(self, now: float | None = None) -> None:
        """Start the clock of a paused job again; the events still to come move later by the pause."""
        now = self.clock() if now is None else now
        snap = self.snapshot(now)
        with self.lock:
            if self.paused_since is None:
                raise NotAllowed(
                    f"Job {self.job_id} is {snap.status!r}; only a paused job can be resumed.", snap.status
                )
            self._end_pause(now)

    def _end_pause(self, now: float) -> None:
        """Close the current pause, if any; call with ``lock`` held."""
        if self.paused_since is None:
            return
        length = now - self.paused_since
        fraction = (self.paused_since - self.start_mono - self.paused_total) / self.span
        self.shifts.append((fraction, length))
        self.paused_total += length
        self.paused_since = None

    def created_at(self) -> int:
        return int(self.base_wall)

    def _shift(self, fraction: float) -> float:
        return sum(length for at, length in self.shifts if fraction > at)

    def _event_time(self, index: int) -> int:
        if self.cut is not None and index >= self.cut:
            return int(self.cut_wall or self.base_wall)
        if self.forced_from is not None and index >= self.forced_from:
            return int(self.forced_wall or self.base_wall)
        fraction = self._fraction(index)
        return int(self.base_wall + fraction * self.span + self._shift(fraction))

    def finished_at(self) -> int:
        if self.cut is not None:
            return int(self.cut_wall or self.base_wall)
        if self.forced_from is not None:
            return int(self.forced_wall or self.base_wall)
        return int(self.base_wall + self.span + self._shift(1.0))

    # ----------------------------------------------------------------- events
    def event_id(self, index: int) -> str:
        return self.codec.encode(index)

    def index_of(self, event_id: str) -> int | None:
        return self.codec.decode(event_id)

    def _trend(self, step: int) -> float:
        progress = (step - 1) / max(1, self.total_steps - 1)
        return self.loss_floor + (self.loss_start - self.loss_floor) * math.exp(-self.loss_decay * progress)

    def _valid(self, step: int, trend: float) -> tuple[float, float]:
        loss = round(trend * (1.0 + 0.3 * self._draw(12, step)), 4)
        return loss, round(min(0.999, max(0.0, 1.0 - 0.32 * loss)), 4)

    def _full_valid(self, step: int, trend: float) -> tuple[float, float]:
        loss = round(trend * (1.05 + 0.1 * self._draw(13, step)), 4)
        return loss, round(min(0.999, max(0.0, 1.0 - 0.32 * loss)), 4)

    def _metrics(self, step: int) -> tuple[str, dict[str, Any]]:
        """Step ``step`` (1-based): a noisy, decreasing loss, and the message that quotes it."""
        steps = self.total_steps
        trend = self._trend(step)
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
            data["valid_loss"], data["valid_mean_token_accuracy"] = self._valid(step, trend)
            message += f", validation loss={data['valid_loss']:.4f}"
        if step == steps:
            data["full_valid_loss"], data["full_valid_mean_token_accuracy"] = self._full_valid(step, trend)
            message += f", full validation loss={data['full_valid_loss']:.4f}"
        return message, data

    def _closing(self, last: int, outcome: str) -> tuple[str, str, str, dict[str, Any] | None]:
        """Closing event ``last`` (0 or 1) of a job that ends with ``outcome``."""
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

    def _content(self, index: int, realistic: bool) -> tuple[str, str, str, dict[str, Any] | None]:
        """(level, message, type, data) of event ``index``."""
        if self.cut is not None and index >= self.cut:
            return self._closing(index - self.cut, self.outcome)
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
            step = self._checkpoint_blocks.get(block)
            if step is not None:
                name = self.checkpoint_model(step)
                return "info", f"Checkpoint created at step {step} with Snapshot ID: {name}", "message", {}
            pick = self._draw(20, block)
            if pick < 0.35:
                text = _WARNINGS[int(pick / 0.35 * len(_WARNINGS))]
                return "warn", text.format(s=done, v=3), "message", {}
            text = _NOTES[int((pick - 0.35) / 0.65 * len(_NOTES))]
            return "info", text.format(s=done, e=done * self.batch_size), "message", {}
        return self._closing(index - PREAMBLE - self.middle, self.outcome)

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

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_model(self, step: int) -> str:
        return f"{self.fine_tuned_name}:ckpt-step-{step}"

    def checkpoint_id(self, step: int) -> str:
        return "ftckpt_" + hashed_id(f"ckpt:{self.job_id}:{step}")

    def checkpoints(self, snap: Snapshot) -> list[dict[str, Any]]:
        """Checkpoints reached at the instant of ``snap``, newest first (at most three)."""
        limit = snap.visible if self.cut is None else min(snap.visible, self.cut)
        found = []
        for step in reversed(self.checkpoint_steps):
            index = _step_index(step)
            if index >= limit:
                continue
            trend = self._trend(step)
            _message, data = self._metrics(step)
            valid, valid_acc = self._valid(step, trend)
            full, full_acc = self._full_valid(step, trend)
            found.append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": self.checkpoint_id(step),
                    "created_at": self._event_time(index),
                    "fine_tuned_model_checkpoint": self.checkpoint_model(step),
                    "step_number": step,
                    "metrics": {
                        "step": step,
                        "train_loss": data["train_loss"],
                        "train_mean_token_accuracy": data["train_mean_token_accuracy"],
                        "valid_loss": valid,
                        "valid_mean_token_accuracy": valid_acc,
                        "full_valid_loss": full,
                        "full_valid_mean_token_accuracy": full_acc,
                    },
                    "fine_tuning_job_id": self.job_id,
                }
            )
        return found

    # ----------------------------------------------------------------- job objects
    def _resolved_method(self) -> dict[str, Any]:
        """The request's ``method`` with every ``"auto"`` replaced by the value the job uses."""
        method = dict(self.spec.method or {"type": self.method_type})
        kind = self.method_type
        section = dict(method.get(kind) or {})
        given = dict(section.get("hyperparameters") or self.spec.hyperparameters or {})
        resolved = {
            **given,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate,
            "n_epochs": self.n_epochs,
        }
        if kind == "dpo":
            resolved["beta"] = _pick_number(given.get("beta"), 0.1)
        if kind == "reinforcement":
            for name, default in (("compute_multiplier", 1.0), ("eval_interval", 1), ("eval_samples", 1)):
                resolved[name] = _pick_number(given.get(name), default)
            resolved.setdefault("reasoning_effort", "default")
        section["hyperparameters"] = resolved
        method["type"] = kind
        method[kind] = section
        return method

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
        with self.lock:
            finished_at = self.finished_at()
        job: dict[str, Any] = {
            "object": "fine_tuning.job",
            "id": self.job_id,
            "model": self.spec.model,
            "created_at": self.created_at(),
            "finished_at": finished_at if snap.terminal else None,
            "fine_tuned_model": self.fine_tuned_name if succeeded else None,
            "organization_id": ORGANIZATION_ID,
            "result_files": [self.result_file] if succeeded else [],
            "status": status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "hyperparameters": hyper,
            "trained_tokens": self.total_steps * self.batch_size * 512 if succeeded else None,
            "error": (
                {"code": self.failure[0], "message": self.failure[2], "param": self.failure[1]}
                if failed
                else None
            ),
            "integrations": [dict(item) for item in self.spec.integrations or ()],
            "seed": self.seed,
            "estimated_finish": (
                finished_at if self.live and not snap.terminal and status != "paused" else None
            ),
            "method": self._resolved_method(),
            "metadata": dict(self.spec.metadata) if self.spec.metadata is not None else None,
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
        with self.lock:
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


def _pick_int(value: Any, default: int) -> int:
    """A given integer hyperparameter, or the job's own value for ``"auto"`` / absent."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _pick_number(value: Any, default: float) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default
