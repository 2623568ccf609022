"""Local HTTP simulator of the OpenAI fine-tuning events API (current and legacy endpoints).

Users, tests and benchmarks need the real protocol without an account, a paid fine-tune or hours of
waiting. Standard library only, no Airflow import, so it starts fast anywhere::

    from airflow_ftevents.simulator import JobSpec, Simulator

    with Simulator() as sim:
        sim.add_job(JobSpec(job_id="ftjob-abc", n_events=200, duration=5.0))
        ...  # point a client at sim.base_url with the key "sk-sim-test"

Command line: ``python -m airflow_ftevents.simulator --port 8080`` (first stdout line: the base URL).

Routes, under ``/v1``, ``/openai/v1`` and ``/openai`` (``api-version`` is ignored):
``GET|POST /fine_tuning/jobs``, ``GET /fine_tuning/jobs/{id}``, ``GET /fine_tuning/jobs/{id}/events``,
``POST /fine_tuning/jobs/{id}/cancel``, ``GET /fine-tunes``, ``GET /fine-tunes/{id}``,
``GET /fine-tunes/{id}/events[?stream=true]``; and, without auth, ``/_sim/faults``,
``/_sim/random_faults``, ``/_sim/jobs`` and ``/_sim/requests`` to drive a simulator in another process.

Choices where the API documents nothing: an ``after`` that is not the id of a visible event of the job
is refused with 400 (``param: "after"``, ``code: "invalid_cursor"``); ``limit`` must be a positive
integer (400 otherwise) and has no maximum; cancelling a finished job is a 400
(``code: "job_not_cancellable"``); ``api_key=None`` turns authentication off.
"""

from __future__ import annotations

from airflow_ftevents.simulator.faults import FAULT_KINDS
from airflow_ftevents.simulator.model import OUTCOMES, JobSpec
from airflow_ftevents.simulator.server import Simulator

__all__ = ["FAULT_KINDS", "OUTCOMES", "JobSpec", "Simulator"]
