"""The simulator answers the official ``openai`` client, and the client and the hook read the same events."""

from __future__ import annotations

import openai

from airflow_ftevents.hooks import FineTuneEventsHook
from airflow_ftevents.simulator import JobSpec


def test_official_client_auto_paging_and_the_hook_read_the_same_events(sim, sim_conn, api_key) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-parity", n_events=257, outcome="failed"))
    client = openai.OpenAI(api_key=api_key, base_url=sim.base_url, max_retries=0)
    newest_first = [
        e.model_dump(exclude_unset=True) for e in client.fine_tuning.jobs.list_events(job_id, limit=50)
    ]
    ours = list(FineTuneEventsHook(conn_id=sim_conn).iter_events(job_id, page_size=50))
    assert len(ours) == 257
    assert ours == newest_first[::-1] == sim.events(job_id)
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == FineTuneEventsHook(conn_id=sim_conn).get_job(job_id)["status"] == "failed"
