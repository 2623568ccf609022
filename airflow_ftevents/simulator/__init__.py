"""Local HTTP simulator of the OpenAI fine-tuning events API (current and legacy endpoints).

Users, tests and benchmarks need the real protocol without an account, a paid fine-tune or hours of
waiting. Standard library only, no Airflow import, so it starts fast anywhere::

    from airflow_ftevents.simulator import JobSpec, Simulator

    with Simulator() as sim:
        sim.add_job(JobSpec(job_id="ftjob-abc", n_events=200, duration=5.0))
        ...  # point a client at sim.base_url with the key "sk-sim-test"

Command line: ``python -m airflow_ftevents.simulator --port 8080``.
"""

from __future__ import annotations

from airflow_ftevents.simulator.faults import FAULT_KINDS
from airflow_ftevents.simulator.model import OUTCOMES, JobSpec
from airflow_ftevents.simulator.server import Simulator

__all__ = ["FAULT_KINDS", "OUTCOMES", "JobSpec", "Simulator"]
