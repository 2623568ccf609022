"""The two loops that execute plans: one with a blocking fetch, one with an awaitable fetch.

This is the only place where sync and async code meet the plans of ``paging.py``; everything a plan
decides is written once, there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from airflow_ftevents.core.paging import ApiRequest, Emit, Plan


def run_sync(plan: Plan, fetch: Callable[[ApiRequest], Any]) -> Iterator[Any]:
    """Run ``plan``, answering each request with ``fetch(request)``; yield what it emits."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                yield step.value
                step = next(plan)
            else:
                step = plan.send(fetch(step))
    except StopIteration:
        return
    finally:
        plan.close()


async def run_async(plan: Plan, fetch: Callable[[ApiRequest], Awaitable[Any]]) -> AsyncIterator[Any]:
    """Run ``plan``, answering each request with ``await fetch(request)``; yield what it emits."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                yield step.value
                step = next(plan)
            else:
                step = plan.send(await fetch(step))
    except StopIteration:
        return
    finally:
        plan.close()
