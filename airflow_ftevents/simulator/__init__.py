"""Local HTTP simulator of the OpenAI fine-tuning events API (current and legacy endpoints).

Users, tests and benchmarks need the real protocol without an account, a paid fine-tune or hours of
waiting. Standard library only, no Airflow import, so it starts fast anywhere::

    from airflow_ftevents.simulator import JobSpec, Simulator

    with Simulator() as sim:
        sim.add_job(JobSpec(job_id="ftjob-abc", n_events=200, duration=5.0))
        ...  # point a client at sim.base_url with the key "sk-sim-test"

Command line: ``python -m airflow_ftevents.simulator`` (port 8765 by default, ``--port 0`` for a free
one; the first stdout line is the base URL).

Routes, under ``/v1``, ``/openai/v1`` and ``/openai`` (``api-version`` is ignored):
``GET|POST /fine_tuning/jobs``, ``GET /fine_tuning/jobs/{id}``, ``GET /fine_tuning/jobs/{id}/events``,
``GET /fine_tuning/jobs/{id}/checkpoints``, ``POST /fine_tuning/jobs/{id}/cancel|pause|resume``,
``GET /fine-tunes``, ``GET /fine-tunes/{id}``, ``GET /fine-tunes/{id}/events[?stream=true]``; and,
without auth, ``/_sim/...`` (see :mod:`.control`) to drive a simulator in another process.
``api_key=None`` turns authentication off. The choices made where the API documents nothing are listed
in :mod:`.routes`.

Modules: :mod:`.model` (a job and its events as pure functions), :mod:`.jobs` (the registry, the jobs
list, cheap history), :mod:`.validation` (create requests), :mod:`.faults`, :mod:`.framing` (HTTP),
:mod:`.routes` (the API endpoints), :mod:`.control` (``/_sim/``) and :mod:`.facade` (:class:`Simulator`).
"""

from __future__ import annotations

from airflow_ftevents.simulator.facade import Simulator
from airflow_ftevents.simulator.faults import FAULT_KINDS
from airflow_ftevents.simulator.model import OUTCOMES, JobSpec

__all__ = ["FAULT_KINDS", "OUTCOMES", "JobSpec", "Simulator"]
