"""The scheduler's instruments and the trace they feed.

brpc: none (brpc has bvar counters, not an event log). The idea is trio's "instruments":
the runtime calls every subscribed instrument at each scheduling event, and tools (this trace,
the pictures in ``brpc_mini.viz``) hang off that hook instead of being woven into the scheduler.

Every event uses stable labels only: bthreads are numbered in creation order (``b3`` is the third
bthread this runtime created, as the seed's "bthread 3"), groups by their index from 1
(``g2`` is "TaskGroup 2"). No ids of Python objects, no addresses, no wall-clock times, so a
deterministic runtime gives the same trace, byte for byte, for the same seed.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator


@dataclass(frozen=True)
class TraceEvent:
    """One scheduling event.

    ``kind`` is one of: create, push_rq, push_remote_rq, pop_rq, pop_remote_rq, steal, run,
    suspend, wake, yield, sleep, end, timer_add, timer_fire, timer_del, idle, io, pthread_block,
    pthread_wake, clock.
    """
    seq: int
    kind: str
    bthread: int | None = None   # creation number of the bthread concerned (b<N>)
    group: int | None = None     # group index from 1 (g<N>), None for non-worker code
    detail: str = ""
    now_us: int | None = None    # runtime clock (deterministic mode only; None in threads mode)

    def __str__(self) -> str:
        who = f"b{self.bthread}" if self.bthread is not None else "-"
        where = f"g{self.group}" if self.group is not None else "--"
        text = f"{self.seq:5d} {where:>3} {self.kind:<15} {who:<5}"
        if self.detail:
            text += f" {self.detail}"
        return text.rstrip()


@dataclass
class Trace:
    """The list of :class:`TraceEvent` a runtime recorded, readable as data and printable."""
    events: list = field(default_factory=list)
    enabled: bool = True

    def __call__(self, event: TraceEvent) -> None:
        if self.enabled:
            self.events.append(event)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def __getitem__(self, index):
        return self.events[index]

    def clear(self) -> None:
        self.events.clear()

    def of_kind(self, *kinds: str) -> list:
        """The events whose kind is one of ``kinds``."""
        return [e for e in self.events if e.kind in kinds]

    def since(self, seq: int) -> list:
        """The events recorded after event number ``seq``."""
        return [e for e in self.events if e.seq > seq]

    def format(self, events=None) -> str:
        """The events as text, one per line (the whole trace by default)."""
        return "\n".join(str(e) for e in (self.events if events is None else events))

    def print(self, events=None) -> None:
        print(self.format(events))

    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0
