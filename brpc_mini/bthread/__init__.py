"""brpc_mini.bthread — brpc's M:N thread runtime, rebuilt on greenlets.

What it is
----------
brpc runs user-level threads ("bthreads") on a few OS threads ("workers"). Each worker owns a
TaskGroup with two run queues: ``_rq``, which only it pushes to (from bthreads it runs), and
``_remote_rq``, which other threads push to. An idle worker steals from the others. A bthread that
blocks — on a Butex, on an Id, in ``bthread_usleep`` — gives its worker to the next bthread instead
of blocking the OS thread. This package keeps brpc's names and its orderings (TaskControl,
TaskGroup, TaskMeta, ``run_main_task``, ``sched_to``, remained callbacks, Butex, Id, TimerThread)
so that a reader can go from a chapter to brpc's C++ and back.

How it maps to Python
---------------------
A bthread's stack is a greenlet, created lazily the first time the bthread runs (``sched_to``), and
reused for the next bthread when it ends (``ending_sched``, brpc's stack reuse; creating a greenlet
costs ~10x more than reusing one). A worker's own stack — the "main task" — is the worker's main
greenlet. Futex words (ParkingLot, a pthread waiter's ``sig``, the TimerThread's wake-up) become a
``threading.Condition`` or ``Event`` beside the same integer. Lock-free structures (``_rq``, the Id
fields) become a small lock around the same state machine.

Two modes, one code base
------------------------
``Runtime(mode="threads")`` runs each TaskGroup on its own OS thread, as brpc does. Greenlets
cannot move between OS threads, so a bthread that has started stays on its group ("home"): thieves
take only bthreads that have not started, and every wake-up is sent home. brpc would let any worker
resume it. A worker blocked in a syscall therefore strands its own bthreads — the one place the
kit's behaviour differs from brpc, and the chapters say so.

``Runtime(mode="deterministic", seed=s)`` runs every group on one OS thread, in turns given by a
driver: one turn lets one group run until it has switched ``switch_budget`` times or has nothing
to run. Timers fire on a clock the driver controls, and I/O is polled only when every group is
idle, so the same seed gives the same schedule and the same trace, byte for byte. Here any group
may resume any bthread, exactly as brpc. ``rt.step()`` makes one decision; blocking calls made by
the program's own code drive the runtime until they can return; ``rt.start_pthread(fn)`` simulates
a plain thread (the seed's ``main``) whose blocking pauses only it.

What it refuses to do
---------------------
No preemption: a bthread that calls ``time.sleep`` or a blocking ``recv`` blocks its worker, as in
brpc. No parallel speed: the GIL lets one worker run Python at a time; the threads are there for
structure and for real blocking. Tags, priority queues, bthread-local storage and the pthread
stack type are left out.

Explained in: notebooks/01_scheduler.ipynb, 02_butex.ipynb, 03_id.ipynb
"""
from .bthread import (  # noqa: F401
    bthread_about_to_quit, bthread_exit, bthread_flush, bthread_getconcurrency, bthread_interrupt,
    bthread_join, bthread_self, bthread_setconcurrency, bthread_start_background,
    bthread_start_urgent, bthread_stop, bthread_timer_add, bthread_timer_del, bthread_usleep,
    bthread_yield, gettimeofday_us,
)
from .butex import (  # noqa: F401
    Butex, ButexBthreadWaiter, ButexPthreadWaiter, butex_create, butex_destroy, butex_wait,
    butex_wake, butex_wake_all, butex_wake_except, butex_wake_n,
)
from .context import current_runtime, tls_task_group  # noqa: F401
from .errno import ESTOP, errno_name  # noqa: F401
from .id import (  # noqa: F401
    ID_MAX_RANGE, INVALID_BTHREAD_ID, Id, address_id, bthread_id_about_to_destroy, bthread_id_cancel,
    bthread_id_create, bthread_id_create2, bthread_id_create_ranged, bthread_id_error,
    bthread_id_error2, bthread_id_join, bthread_id_lock, bthread_id_lock_and_reset_range,
    bthread_id_trylock, bthread_id_unlock, bthread_id_unlock_and_destroy,
)
from .runtime import DeadlockError, PthreadHandle, Runtime, UnfinishedBthreadWarning  # noqa: F401
from .task_control import TaskControl  # noqa: F401
from .task_group import TaskGroup  # noqa: F401
from .task_meta import (  # noqa: F401
    BTHREAD_ATTR_NORMAL, BTHREAD_NEVER_QUIT, BTHREAD_NOSIGNAL, INVALID_BTHREAD, BthreadAttr, TaskMeta,
)
from .timer_thread import TimerThread  # noqa: F401
from .trace import Trace, TraceEvent  # noqa: F401
