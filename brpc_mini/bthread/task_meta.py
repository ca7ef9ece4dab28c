"""TaskMeta: the control block of one bthread, and the tid that names it.

brpc: src/bthread/task_meta.h, TaskMeta; src/bthread/task_group_inl.h, make_tid / get_slot /
get_version

A tid is ``(version << 32) | slot``. The slot indexes the runtime's pool of TaskMetas (brpc's
ResourcePool: objects are recycled, never freed); the version lives in the TaskMeta's
``version_butex``, starts at 1, and is bumped when the bthread ends, so an old tid of a recycled
slot is recognisably dead and ``bthread_join`` on it returns at once.

Python differences: ``stack`` is a greenlet (created lazily in ``TaskGroup.sched_to``, exactly
where brpc allocates a stack), and ``home_group`` records the group whose OS thread owns that
greenlet in threads mode, since a greenlet cannot be resumed from another thread.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from .butex import Butex

INVALID_BTHREAD = 0

#: attr flags (brpc: src/bthread/types.h, bthread_attrflags_t)
BTHREAD_NOSIGNAL = 32
BTHREAD_NEVER_QUIT = 64

#: stack types (brpc: src/bthread/types.h, bthread_stacktype_t)
BTHREAD_STACKTYPE_PTHREAD = 1
BTHREAD_STACKTYPE_SMALL = 2
BTHREAD_STACKTYPE_NORMAL = 3
BTHREAD_STACKTYPE_LARGE = 4


@dataclass(frozen=True)
class BthreadAttr:
    """Attributes of a new bthread.

    brpc: src/bthread/types.h, bthread_attr_t

    ``name`` is a label for traces and pictures (brpc's ``bthread_attr_set_name``); by default the
    bthread is labelled with its function's name.
    """
    stack_type: int = BTHREAD_STACKTYPE_NORMAL
    flags: int = 0
    name: str | None = None

    def with_flags(self, flags: int) -> "BthreadAttr":
        return BthreadAttr(self.stack_type, self.flags | flags, self.name)


BTHREAD_ATTR_NORMAL = BthreadAttr()


def make_tid(version: int, slot: int) -> int:
    """brpc: src/bthread/task_group_inl.h, make_tid"""
    return (version << 32) | slot


def get_slot(tid: int) -> int:
    return tid & 0xFFFFFFFF


def get_version(tid: int) -> int:
    return tid >> 32


class TaskMeta:
    """Control block of one bthread: what to run, its tid, its stack, and its join butex.

    brpc: src/bthread/task_meta.h, TaskMeta

    ``version_butex`` and ``version_lock`` are kept when the slot is reused, as in brpc.
    ``seq`` is this runtime's creation number of the bthread (the "bthread 3" of the seed) and
    ``name`` its label; both exist only for traces and pictures.
    """

    __slots__ = ("fn", "args", "tid", "slot", "version_butex", "version_lock", "stack", "attr",
                 "current_waiter", "current_sleep", "interrupted", "stop", "about_to_quit",
                 "sleep_failed", "home_group", "seq", "name", "is_main", "group_of_main", "runtime",
                 "__weakref__")

    def __init__(self, slot: int, runtime=None):
        self.slot = slot
        self.version_butex = Butex(1, runtime=runtime, owner="version_butex")
        self.version_lock = threading.Lock()
        self.runtime = runtime
        self.fn = None
        self.args = ()
        self.tid = INVALID_BTHREAD
        self.stack = None
        self.attr = BTHREAD_ATTR_NORMAL
        self.current_waiter = None
        self.current_sleep = 0
        self.interrupted = False
        self.stop = False
        self.about_to_quit = False
        self.sleep_failed = False
        self.home_group = None
        self.seq = 0
        self.name = ""
        self.is_main = False
        self.group_of_main = None

    @property
    def label(self) -> str:
        """Stable label: ``bthread 3 (sender)``, or ``main task of TaskGroup 2``."""
        if self.is_main:
            return f"main task of TaskGroup {self.group_of_main.index + 1}"
        return f"bthread {self.seq} ({self.name})" if self.name else f"bthread {self.seq}"

    @property
    def started(self) -> bool:
        """True once the bthread has a stack (a greenlet), i.e. it has run at least once."""
        return self.stack is not None

    def __repr__(self) -> str:
        return f"<TaskMeta {self.label} tid=0x{self.tid:x}>"
