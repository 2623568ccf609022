"""The two loops that execute plans: one with a blocking fetch, one with an awaitable fetch.

This is the only place where sync and async code meet the plans of the core; everything a plan
decides (what to request, what to hand out, how long to wait, what to do about a failed request) is
written once, in the plan. A failed request is thrown into the plan at the point where it asked, so a
plan may tolerate it (a follower that polls again later) or let it propagate to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from airflow_ftevents.core.api import ApiRequest
from airflow_ftevents.core.paging import Emit, Plan, Sleep
from airflow_ftevents.errors import FineTuneEventsError

# Values handed out per step of the event loop: a follower catching up on a long job decodes and logs
# thousands of events, which must not run as one step of a triggerer's loop.
EMITS_PER_STEP = 10


def run_sync(
    plan: Plan, fetch: Callable[[ApiRequest], Any], sleep: Callable[[float], None] | None = None
) -> Iterator[Any]:
    """Run ``plan``, answering each request with ``fetch(request)``; yield what it emits.

    ``sleep`` defaults to ``time.sleep`` as it is when the plan waits.
    """
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                yield step.value
                step = next(plan)
            elif isinstance(step, Sleep):
                (sleep or time.sleep)(step.seconds)
                step = next(plan)
            else:
                try:
                    result = fetch(step)
                except FineTuneEventsError as exc:
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
    except StopIteration:
        return
    finally:
        plan.close()


async def run_async(plan: Plan, fetch: Callable[[ApiRequest], Awaitable[Any]]) -> AsyncIterator[Any]:
    """Run ``plan``, answering each request with ``await fetch(request)``; yield what it emits."""
    emitted = 0
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                yield step.value
                emitted += 1
                if emitted % EMITS_PER_STEP == 0:
                    await asyncio.sleep(0)
                step = next(plan)
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                step = next(plan)
            else:
                try:
                    result = await fetch(step)
                except FineTuneEventsError as exc:
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
                    del result  # a page kept here would stay alive through the plan's next sleep
    except StopIteration:
        return
    finally:
        plan.close()
