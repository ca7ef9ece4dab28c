"""draw_trace: the trace as a swimlane picture, one column per TaskGroup, time going down.

brpc: none (a picture of the kit's trace, ``brpc_mini.bthread.trace``).

A thin front for :func:`brpc_mini.viz.sequence.sequence_dot` that returns a :class:`Picture` and
defaults to the scheduling events chapter 01 talks about: where each tid was pushed and popped,
who stole what, when each bthread ran, suspended, woke and ended.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

from .picture import Picture

#: the scheduler's own events (no RPC checkpoints)
SCHEDULER_KINDS = ("create", "push_rq", "push_remote_rq", "pop_rq", "pop_remote_rq", "steal", "run",
                   "suspend", "wake", "yield", "sleep", "end", "pthread_block", "pthread_wake",
                   "timer_fire")


def draw_trace(events, ngroups: int | None = None, kinds=SCHEDULER_KINDS, bthreads=None,
               title: str | None = None, max_rows: int = 120) -> Picture:
    """Draw ``events`` (``TraceEvent``s: ``rt.trace``, ``rt.trace.since(n)``...) as swimlanes.

    ``ngroups`` defaults to the highest group number in the events; ``kinds`` keeps only those
    kinds (None: all); ``bthreads`` keeps only events about those bthread numbers (events about no
    bthread are kept).
    """
    from .sequence import sequence_dot
    events = list(events)
    if ngroups is None:
        ngroups = max((e.group for e in events if e.group is not None), default=1)
    return Picture(sequence_dot(events, ngroups, kinds=kinds, bthreads=bthreads, title=title or "",
                                max_rows=max_rows))


__all__ = ["draw_trace", "SCHEDULER_KINDS"]
