"""Job state rules: terminal and known statuses, the summary, the failure message, event lines."""

from __future__ import annotations

import json
import logging

import pytest
from api_fakes import T0, make_events

from airflow_ftevents.core import jobstate


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("succeeded", True),
        ("failed", True),
        ("cancelled", True),
        ("Canceled", True),
        ("validating_files", False),
        ("queued", False),
        ("running", False),
        ("paused", False),
        ("pending", False),
        ("something_new", False),
        (None, False),
    ],
)
def test_terminal_statuses(status, terminal):
    assert jobstate.is_terminal(jobstate.job_status({"status": status})) is terminal


def test_job_status_normalizes_and_tolerates_unknown():
    assert jobstate.job_status({"status": " Canceled "}) == "cancelled"
    assert jobstate.job_status({"status": "SUCCEEDED"}) == "succeeded"
    assert jobstate.job_status({}) == "unknown"
    assert jobstate.job_status({"status": None}) == "unknown"
    assert jobstate.job_status({"status": "paused"}) == "paused"
    assert jobstate.is_known("paused") is True
    assert jobstate.is_known("pending") is True
    assert jobstate.is_known("something_new") is False


def test_job_summary_keys_and_values():
    job = {
        "id": "ftjob-1",
        "status": "succeeded",
        "fine_tuned_model": "ft:gpt-4o-mini:org::abc",
        "trained_tokens": 1234,
        "finished_at": T0 + 60,
        "hyperparameters": {"n_epochs": 3},
    }
    last = {**make_events(1)[0], "extra": "kept"}
    summary = jobstate.job_summary("ftjob-1", job, 42, last)
    assert summary == {
        "job_id": "ftjob-1",
        "status": "succeeded",
        "fine_tuned_model": "ft:gpt-4o-mini:org::abc",
        "trained_tokens": 1234,
        "finished_at": T0 + 60,
        "event_count": 42,
        "last_event": last,  # the event exactly as the API sent it, unknown fields included
    }
    assert summary["last_event"] is not last  # a copy: the summary does not alias the follower's state
    assert json.loads(json.dumps(summary)) == summary
    assert jobstate.job_summary("j", {"status": "running"}, 0, None) == {
        "job_id": "j",
        "status": "running",
        "fine_tuned_model": None,
        "trained_tokens": None,
        "finished_at": None,
        "event_count": 0,
        "last_event": None,
    }


def test_failure_message_with_error_and_error_events():
    job = {
        "status": "failed",
        "error": {
            "code": "invalid_n_examples",
            "message": "Training file has 5 example(s), but must have at least 10 examples",
            "param": "training_file",
        },
    }
    error_events = [
        {"level": "error", "message": "Training file has 5 example(s), but must have at least 10 examples"},
        {"level": "error", "message": "Job failed."},
    ]
    assert jobstate.failure_message("ftjob-1", job, error_events) == (
        "Fine-tuning job ftjob-1 failed; error: Training file has 5 example(s), but must have at least "
        "10 examples (code invalid_n_examples, param training_file); error events: Training file has 5 "
        "example(s), but must have at least 10 examples | Job failed."
    )


def test_failure_message_variants():
    assert jobstate.failure_message("j", {"status": "cancelled", "error": None}) == (
        "Fine-tuning job j cancelled"
    )
    assert jobstate.failure_message("j", {"status": "failed", "error": {"code": "server_error"}}) == (
        "Fine-tuning job j failed; error: (code server_error)"
    )
    assert jobstate.failure_message("j", {"status": "failed", "error": {"message": "Boom"}}) == (
        "Fine-tuning job j failed; error: Boom"
    )
    many = [{"message": f"e{i}"} for i in range(12)]
    assert jobstate.failure_message("j", {"status": "failed"}, many) == (
        "Fine-tuning job j failed; error events: " + " | ".join(f"e{i}" for i in range(2, 12))
    )


def test_format_event_metrics_error_and_null_data():
    metrics = {
        "level": "info",
        "type": "metrics",
        "message": "Step 10/100: training loss=1.23",
        "data": {"step": 10, "train_loss": 1.23456789, "total_steps": 100, "train_mean_token_accuracy": 0.5},
    }
    assert (
        jobstate.format_event(metrics)
        == "[metrics] step 10/100 train_loss=1.235 train_mean_token_accuracy=0.5"
    )
    assert jobstate.format_event({"type": "metrics", "data": {"step": 3}}) == "[metrics] step 3"
    error = {
        "level": "error",
        "type": "message",
        "message": "Training file has 5 example(s), but must have at least 10 examples",
        "data": {"error_code": "invalid_n_examples", "error_param": "training_file"},
    }
    assert jobstate.format_event(error) == (
        "[error] Training file has 5 example(s), but must have at least 10 examples"
    )
    assert (
        jobstate.format_event({"level": "info", "type": "metrics", "message": "m", "data": None})
        == "[info] m"
    )
    assert (
        jobstate.format_event({"type": "metrics", "message": "no step", "data": {"x": 1}}) == "[info] no step"
    )
    assert jobstate.format_event({"message": "Fine-tuning job started", "data": None}) == (
        "[info] Fine-tuning job started"
    )
    assert jobstate.format_event({}) == "[info] "


def test_log_event_uses_the_event_level(caplog):
    logger = logging.getLogger("test.ftevents.jobstate")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        jobstate.log_event(logger, {"level": "error", "message": "bad"})
        jobstate.log_event(logger, {"level": "warn", "message": "careful"})
        jobstate.log_event(logger, {"level": "info", "message": "fine"})
        jobstate.log_event(logger, {"message": "no level"})
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "[error] bad"),
        (logging.WARNING, "[warn] careful"),
        (logging.INFO, "[info] fine"),
        (logging.INFO, "[info] no level"),
    ]
