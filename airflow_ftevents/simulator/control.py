"""``/_sim/...``: the control API, to drive a simulator in another process (no auth, never logged or faulted).

Each route calls the same public method of :class:`~airflow_ftevents.simulator.facade.Simulator` that a
test in the same process would call, so both ways of driving it behave alike:

=======  ==============================  ===================================================================
POST     /_sim/faults                    ``{"kind", "count", "path", "params"}`` -> ``{"pending": [...]}``
GET      /_sim/faults                    ``{"pending": [...], "applied": {kind: count}}``
DELETE   /_sim/faults                    drop queued faults, random mode off
POST     /_sim/random_faults             ``{"rate", "kinds", "seed", "path", "params"}``
GET      /_sim/jobs                      ``{"data": [ids, oldest first]}``
POST     /_sim/jobs                      a :class:`JobSpec` as JSON -> the job object
POST     /_sim/jobs/{id}/finish          ``{"outcome": "succeeded"}`` -> the job object (400 once finished)
POST     /_sim/history                   ``{"n", "running", "metadata", "n_events", "model"}`` -> ``{"ids"}``
GET      /_sim/requests                  ``{"data": [[method, path, status], ...]}``
DELETE   /_sim/requests                  empty the request log
=======  ==============================  ===================================================================
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from airflow_ftevents.simulator.framing import Exchange
from airflow_ftevents.simulator.model import JobSpec, NotAllowed

if TYPE_CHECKING:
    from airflow_ftevents.simulator.facade import Simulator

PREFIX = "/_sim/"


class ControlApi:
    """Serves ``/_sim/...`` requests by calling the simulator's public methods."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def __call__(self, exchange: Exchange) -> None:
        try:
            payload = json.loads(exchange.body) if exchange.body else {}
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            exchange.error(400, "The request body must be a JSON object.", code="invalid_json")
            return
        segments = [unquote(s) for s in exchange.path[len(PREFIX) :].split("/")]
        try:
            answer = self._route(exchange.method, segments, payload)
        except KeyError as exc:
            exchange.error(404, str(exc.args[0] if exc.args else exc), code="not_found")
            return
        except NotAllowed as exc:
            exchange.error(400, str(exc), code="job_finished")
            return
        except (TypeError, ValueError) as exc:
            exchange.error(400, str(exc), code="invalid_value")
            return
        if answer is None:
            exchange.error(404, f"Invalid URL ({exchange.method} {exchange.path})", code="unknown_url")
            return
        exchange.send_json(200, answer)

    def _route(self, method: str, segments: list[str], payload: dict[str, Any]) -> Any:
        """The answer's JSON, or None for an unknown route."""
        sim = self.sim
        route = (method, *segments)
        if route == ("POST", "faults"):
            sim.inject(
                str(payload.get("kind")),
                payload.get("count", 1),
                payload.get("path"),
                **(payload.get("params") or {}),
            )
            return {"pending": sim.pending_faults()}
        if route == ("GET", "faults"):
            return {"pending": sim.pending_faults(), "applied": sim.applied_faults()}
        if route == ("DELETE", "faults"):
            sim.clear_faults()
            return {"pending": []}
        if route == ("POST", "random_faults"):
            rate = payload.get("rate", 0.05)
            sim.set_random_faults(
                rate,
                payload.get("kinds"),
                payload.get("seed"),
                payload.get("path"),
                **(payload.get("params") or {}),
            )
            return {"rate": rate}
        if route == ("GET", "jobs"):
            return {"data": sim.job_ids()}
        if route == ("POST", "jobs"):
            return sim.job(sim.add_job(JobSpec(**payload)))
        if len(segments) == 3 and method == "POST" and segments[0] == "jobs" and segments[2] == "finish":
            return sim.finish_job(segments[1], str(payload.get("outcome", "succeeded")))
        if route == ("POST", "history"):
            return {"ids": sim.add_history(**payload)}
        if route == ("GET", "requests"):
            return {"data": [list(entry) for entry in sim.request_log]}
        if route == ("DELETE", "requests"):
            sim.request_log.clear()
            return {"data": []}
        return None
