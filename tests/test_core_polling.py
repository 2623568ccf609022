"""The polling schedule: the interval less a little jitter, and a wall-clock deadline kept."""

from __future__ import annotations

from airflow_ftevents.core.polling import next_poll_delay


def test_next_poll_delay_is_the_interval_less_up_to_ten_percent_jitter():
    assert next_poll_delay(60.0, None, 0.0, rng=lambda: 0.0) == 60.0
    assert next_poll_delay(60.0, None, 0.0, rng=lambda: 0.5) == 57.0
    assert next_poll_delay(60.0, None, 0.0, rng=lambda: 1.0) == 54.0
    delays = {next_poll_delay(60.0, None, 0.0) for _ in range(200)}
    assert len(delays) > 100 and all(54.0 <= d <= 60.0 for d in delays)


def test_next_poll_delay_keeps_the_deadline():
    assert next_poll_delay(60.0, 1_000.0, 990.0, rng=lambda: 0.0) == 10.0
    assert next_poll_delay(60.0, 1_000.0, 900.0, rng=lambda: 0.5) == 57.0
    assert next_poll_delay(60.0, 1_000.0, 1_000.0) is None
    assert next_poll_delay(60.0, 1_000.0, 1_000.5) is None
