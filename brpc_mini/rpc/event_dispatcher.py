"""EventDispatcher: the epoll loop, running as a bthread.

brpc: src/brpc/event_dispatcher.h, src/brpc/event_dispatcher.cpp, event_dispatcher_epoll.cpp

brpc has no I/O threads. ``FLAGS_event_dispatcher_num`` dispatchers (1 by default) are made
lazily, when the first fd is registered; each runs ``Run`` as a bthread that borrows a worker and
blocks it in ``epoll_wait`` (which is why brpc's default concurrency is 8 + 1). Readable fds go to
``Socket.StartInputEvent``, writable ones to ``Socket.HandleEpollOut`` (``Socket::OnInputEvent`` and
``Socket::OnOutputEvent`` in current brpc). Sockets are added
edge-triggered (EPOLLET), so each edge is reported once; ``Socket._nevent`` makes sure no edge is
lost and only one bthread reads a socket at a time.

Python differences:

* epoll reports fds, not user data, so each dispatcher keeps ``fd -> SocketId``. An fd goes to
  the dispatcher ``fmix32(slot of its SocketId) % num`` — brpc hashes the fd; the SocketId is
  used here because fd numbers vary from run to run and the walkthrough must not.
* deterministic mode: the dispatcher bthread polls with timeout 0, and when nothing is ready it
  waits on its ``io_butex`` instead of blocking; the driver, once every group is idle, polls the
  epoll fd and wakes it (``poll_ready``). The dispatcher still runs as a bthread and still hands
  its worker to the reader with ``bthread_start_urgent``.
* threads mode: ``epoll.poll(-1)`` really blocks the worker. Because a started bthread can only
  run on its own worker, a wake-up sent to a worker blocked here would be stranded; the dispatcher
  therefore lends its group a hook that writes to its wake-up pipe, and yields when woken that way.

Explained in: notebooks/05_issue_rpc.ipynb, notebooks/06_response_path.ipynb
"""
from __future__ import annotations

import logging
import os
import select
import threading

from ..bthread import BthreadAttr, Butex, bthread_join, bthread_start_background, butex_wait, butex_wake
from ..bthread import bthread_yield
from ..bthread.context import tls_task_group
from ..bthread.task_meta import BTHREAD_NEVER_QUIT

log = logging.getLogger("brpc_mini.rpc")

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLET = select.EPOLLET
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP
EPOLLRDHUP = getattr(select, "EPOLLRDHUP", 0x2000)


def fmix32(h: int) -> int:
    """MurmurHash3's finalizer (brpc: src/butil/third_party/murmurhash3/murmurhash3.h, fmix32)."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


class EventDispatcher:
    """One epoll fd, its wake-up pipe, and the bthread that runs ``Run``."""

    def __init__(self, runtime, index: int):
        self.runtime = runtime
        self.index = index
        self._epoll = select.epoll()
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self._epoll.register(self._wakeup_r, EPOLLIN)
        self._consumers: dict = {}          # fd -> SocketId
        self._lock = threading.Lock()
        self._tid = 0
        self._stop = False
        self.io_butex = Butex(0, runtime=runtime, owner=f"EventDispatcher {index + 1} io_butex")
        self._parked = False
        self.nevents = 0

    @property
    def label(self) -> str:
        return f"EventDispatcher {self.index + 1}"

    def Start(self) -> None:
        """Run ``Run`` as a bthread. brpc: EventDispatcher::Start"""
        attr = BthreadAttr(name=f"EventDispatcher.Run", flags=BTHREAD_NEVER_QUIT)
        self._tid = bthread_start_background(self.Run, attr=attr)
        if not self.runtime.threads_mode:
            self.runtime.add_io_source(self)

    # -- registration --------------------------------------------------------------------------
    def AddConsumer(self, socket_id: int, fd: int) -> int:
        """Watch ``fd`` for input, edge-triggered. brpc: EventDispatcher::AddConsumer"""
        with self._lock:
            self._consumers[fd] = socket_id
            self._epoll.register(fd, EPOLLIN | EPOLLET)
        return 0

    def RegisterEvent(self, socket_id: int, fd: int, pollin: bool) -> int:
        """Also watch ``fd`` for output (connect, or a full send buffer). brpc: RegisterEvent"""
        with self._lock:
            self._consumers[fd] = socket_id
            if pollin:
                self._epoll.modify(fd, EPOLLIN | EPOLLOUT | EPOLLET)
            else:
                self._epoll.register(fd, EPOLLOUT | EPOLLET)
        return 0

    def UnregisterEvent(self, socket_id: int, fd: int, pollin: bool) -> int:
        """Stop watching output. brpc: EventDispatcher::UnregisterEvent"""
        with self._lock:
            try:
                if pollin:
                    self._epoll.modify(fd, EPOLLIN | EPOLLET)
                else:
                    self._epoll.unregister(fd)
                    self._consumers.pop(fd, None)
            except (OSError, ValueError):
                return -1
        return 0

    def RemoveConsumer(self, fd: int) -> int:
        """Stop watching ``fd``; always before closing it. brpc: RemoveConsumer"""
        with self._lock:
            self._consumers.pop(fd, None)
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                return -1
        return 0

    def consumer_count(self) -> int:
        return len(self._consumers)

    # -- the loop ------------------------------------------------------------------------------
    def _wait_events(self):
        if not self.runtime.threads_mode:
            events = self._epoll.poll(0, 32)
            while not events and not self._stop:
                value = self.io_butex.value
                self._parked = True
                butex_wait(self.io_butex, value)
                self._parked = False
                events = self._epoll.poll(0, 32)
            return events
        g = tls_task_group()
        g._wake_blocked = self._wake
        if len(g._remote_rq) or len(g._rq):
            # A bthread pinned here that was pushed home while the hook was unset (between two
            # polls) got no pipe write: poke the pipe so the poll returns and Run yields to it.
            # Without this it waited for the next unrelated I/O event (found by tests/rpc: a
            # HealthCheck bthread stopped at close never ran, and Runtime.close hung).
            self._wake()
        try:
            return self._epoll.poll(-1, 32)
        except InterruptedError:
            return []
        finally:
            g._wake_blocked = None

    def Run(self) -> None:
        """brpc: EventDispatcher::Run"""
        from .socket import Socket
        while not self._stop:
            events = self._wait_events()
            woken = False
            for fd, ev in events:
                if fd == self._wakeup_r:
                    woken = True
                    try:
                        while os.read(self._wakeup_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                sid = self._consumers.get(fd)
                if sid is None:
                    continue
                self.nevents += 1
                if ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP):
                    Socket.StartInputEvent(sid, ev, self.runtime)
            for fd, ev in events:
                if fd == self._wakeup_r:
                    continue
                sid = self._consumers.get(fd)
                if sid is not None and ev & (EPOLLOUT | EPOLLERR | EPOLLHUP):
                    Socket.HandleEpollOut(sid)
            if woken and not self._stop:
                bthread_yield()   # let the bthreads that were queued on this worker run

    def _wake(self) -> None:
        try:
            os.write(self._wakeup_w, b"w")
        except (BlockingIOError, OSError):
            pass

    # -- deterministic mode: the driver's side -------------------------------------------------
    def poll_ready(self, timeout_s: float) -> bool:
        """Driver hook: if this dispatcher waits and its epoll has events, wake it."""
        if not self._parked or self._stop:
            return False
        try:
            ready, _, _ = select.select([self._epoll.fileno()], [], [], timeout_s)
        except (OSError, ValueError):
            return False
        if not ready:
            return False
        self.io_butex.value += 1
        self.runtime._emit("io", None, f"{self.label}: fds ready")
        butex_wake(self.io_butex)
        return True

    def expects_input(self) -> bool:
        return bool(self._consumers)

    # -- stopping ------------------------------------------------------------------------------
    def Stop(self) -> None:
        """brpc: EventDispatcher::Stop"""
        self._stop = True
        if self.runtime.threads_mode:
            self._wake()
        else:
            self.io_butex.value += 1
            butex_wake(self.io_butex)

    def Join(self) -> None:
        if self._tid:
            bthread_join(self._tid)
            self._tid = 0

    def close(self) -> None:
        self.runtime.remove_io_source(self)
        for fd in (self._wakeup_r, self._wakeup_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._epoll.close()
