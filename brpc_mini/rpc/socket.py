"""Socket: one connection (or listening fd), its wait-free write queue and its read side.

brpc: src/brpc/socket.h, src/brpc/socket.cpp, src/brpc/socket_inl.h,
src/brpc/versioned_ref_with_id.h

**SocketId.** ``(version << 32) | slot``. Live sockets have an even version; ``SetFailed`` makes it
odd, so ``Address(id)`` fails from then on while holders keep a usable object; a failed client
main socket is kept and health-checked, and ``Revive`` makes the same id valid again.

**Write.** ``_write_head`` is null when nobody writes. A writer exchanges its WriteRequest in: if
the old head was null it owns the write right, connects if needed (the bytes then go out when the
connection is up), writes once inline, and if anything is left — bytes, or requests that arrived
meanwhile — starts a **KeepWrite** bthread to finish. Writers that find a head just link
themselves behind it and return at once: they never wait for the owner.

**Read.** ``StartInputEvent`` counts edges in ``_nevent``; only the 0 -> 1 transition starts a
reader bthread, which reads until EAGAIN and leaves only when ``MoreReadEvents`` confirms that no
edge came meanwhile. So one bthread reads a socket at a time and no edge is lost.

**Failures.** ``SetFailed(code, text)`` reports the error to every RPC registered on the socket
(``_id_wait_list``, via ``bthread_id_error2``), so those RPCs retry or fail promptly.

Python differences: a lock stands in for each atomic (``_write_head`` exchange and link happen
together under it, so the UNCONNECTED spin of brpc is not needed); reference counts are not kept —
a socket's fd is closed when it fails, and stale SocketIds fail to Address through the version.

Explained in: notebooks/05_issue_rpc.ipynb, notebooks/06_response_path.ipynb
"""
from __future__ import annotations

import errno as _errno
import logging
import socket as _pysocket
import threading

from ..bthread import (BthreadAttr, Butex, address_id, bthread_id_error2, bthread_start_background,
                       bthread_start_urgent, bthread_usleep, butex_wait, butex_wake_except)
from ..bthread.context import current_runtime
from .errors import EEOF, EFAILEDSOCKET, EOVERCROWDED, berror
from .event_dispatcher import EPOLLOUT, EventDispatcher, fmix32
from .flags import FLAGS
from .iobuf import IOBuf

log = logging.getLogger("brpc_mini.rpc")

INVALID_SOCKET_ID = (1 << 64) - 1
PROGRESS_INIT = 1
KEEPWRITE_WAIT_EPOLLOUT_US = 50_000
DATA_LIST_MAX = 256


def endpoint2str(ep) -> str:
    """``("127.0.0.1", 8000)`` -> ``"127.0.0.1:8000"`` (brpc: butil::endpoint2str)."""
    if ep is None:
        return "0.0.0.0:0"
    return f"{ep[0]}:{ep[1]}"


class RpcRuntimeState:
    """What the RPC layer keeps per runtime: sockets, dispatchers, the socket map."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.sockets: list = []
        self._free: list = []
        self.lock = threading.Lock()
        self.dispatchers: list = []
        self.socket_map: dict = {}      # (endpoint, signature) -> [SocketId, refcount]
        self.client_messenger = None
        self.servers: list = []
        runtime.add_stop_hook(self.shutdown)

    def get_dispatcher(self, socket_id: int) -> EventDispatcher:
        """brpc: GetGlobalEventDispatcher — made and started lazily."""
        with self.lock:
            if not self.dispatchers:
                n = max(1, int(FLAGS.event_dispatcher_num))
                self.dispatchers = [EventDispatcher(self.runtime, i) for i in range(n)]
                start = True
            else:
                start = False
        if start:
            for d in self.dispatchers:
                d.Start()
        slot = socket_id & 0xFFFFFFFF
        return self.dispatchers[fmix32(slot) % len(self.dispatchers)]

    def live_sockets(self) -> list:
        return [s for s in self.sockets if s is not None and not s.Failed() and s._in_use]

    def shutdown(self) -> None:
        for server in list(self.servers):
            server.Stop()
            server.Join()
        for s in list(self.sockets):
            if s._in_use:
                s._health_check_interval_s = 0
                s.SetFailed(EFAILEDSOCKET, "the runtime is closing")
        # A main socket that failed earlier has a HealthCheck bthread asleep for seconds; setting
        # the interval to 0 is not enough, it must be woken to see it (found by tests/rpc: a
        # refused connect left "HealthCheck" unfinished when the runtime closed).
        from ..bthread import bthread_join, bthread_stop
        health_checks = [s._health_check_tid for s in self.sockets if s._health_check_tid]
        for tid in health_checks:
            bthread_stop(tid)
        for tid in health_checks:
            bthread_join(tid)
        for d in self.dispatchers:
            d.Stop()
        for d in self.dispatchers:
            d.Join()
            d.close()
        self.dispatchers = []
        self.runtime._rpc = None


def rpc_state(runtime=None) -> RpcRuntimeState:
    rt = runtime or current_runtime()
    state = getattr(rt, "_rpc", None)
    if state is None:
        with rt._tc_lock:
            state = getattr(rt, "_rpc", None)
            if state is None:
                state = RpcRuntimeState(rt)
                rt._rpc = state
    return state


# bthread attributes of the socket's bthreads, made once
_PROCESS_EVENT_ATTR = BthreadAttr(name="ProcessEvent")
_KEEP_WRITE_ATTR = BthreadAttr(name="KeepWrite")


class WriteRequest:
    """One queued write. brpc: src/brpc/socket.cpp, Socket::WriteRequest"""
    __slots__ = ("data", "next", "id_wait", "socket", "setup_done")

    def __init__(self, data: IOBuf, id_wait: int, socket):
        self.data = data
        self.next = None
        self.id_wait = id_wait
        self.socket = socket
        self.setup_done = False

    def Setup(self, s) -> None:
        """Count the bytes as unwritten (and mark the socket overcrowded past the limit)."""
        if not self.setup_done:
            self.setup_done = True
            s._unwritten_bytes += len(self.data)
            if s._unwritten_bytes >= FLAGS.socket_max_unwritten_bytes:
                s._overcrowded = True


class EpollOutRequest:
    """A connect in progress: who to call when the fd becomes writable or the deadline passes.

    brpc: src/brpc/socket.cpp, EpollOutRequest
    """
    __slots__ = ("fd", "on_epollout_event", "data", "timer_id", "done")

    def __init__(self, fd, on_epollout_event, data):
        self.fd = fd
        self.on_epollout_event = on_epollout_event
        self.data = data
        self.timer_id = 0
        self.done = False


class Socket:
    """A connection. Created through :meth:`Create`; reached through :meth:`Address`."""

    def __init__(self, slot: int, runtime):
        self.slot = slot
        self.runtime = runtime
        self.version = 0
        self._in_use = False
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._epollout_butex = Butex(0, runtime=runtime, owner=f"Socket {slot} epollout_butex")
        self._reset()

    def _reset(self):
        self.fd = None
        self.remote_side = None
        self.local_side = None
        self._write_head = None
        self._nevent = 0
        self._read_buf = IOBuf()
        self._id_wait_list: list = []
        self._error_code = 0
        self._error_text = ""
        self.preferred_index = -1
        self.user = None
        self.on_edge_triggered_events = None
        self.created_by_connect = False
        self._epollout_request = None
        self._connecting = False
        self._unwritten_bytes = 0
        self._overcrowded = False
        self._main_socket_id = INVALID_SOCKET_ID
        self._pool: list = []
        self._health_check_interval_s = 0
        self._health_check_tid = 0
        self._logoff = False
        self.connection_type = "single"
        self.read_eof = False
        self.nread = 0
        self.nwritten = 0
        self.parsing_context = None

    # -- identity ------------------------------------------------------------------------------
    def id(self) -> int:
        return (self.version << 32) | self.slot

    @property
    def label(self) -> str:
        return f"Socket {self.slot}"

    def __repr__(self) -> str:
        state = "failed" if self.Failed() else ("connected" if self.fd is not None else "unconnected")
        return f"<{self.label} {endpoint2str(self.remote_side)} {state}>"

    @staticmethod
    def Create(remote_side=None, fd=None, user=None, on_edge_triggered_events=None,
               health_check_interval_s: int = 0, created_by_connect: bool = False,
               runtime=None) -> int:
        """Make a socket; with an fd, add it to a dispatcher. Returns its SocketId.

        brpc: src/brpc/socket.cpp, Socket::Create / OnCreated / ResetFileDescriptor
        """
        state = rpc_state(runtime)
        with state.lock:
            if state._free:
                # A slot is reused, its object never is: whoever still holds the previous life's
                # object (a response writer, a finished try's Call) keeps a failed socket whose
                # operations fail cleanly, instead of acting on this new connection. brpc gets the
                # same guarantee from its reference count; here the garbage collector keeps the
                # old object alive exactly as long as someone holds it.
                slot = state._free.pop()
                s = Socket(slot, state.runtime)
                s.version = state.sockets[slot]._next_version
                state.sockets[slot] = s
            else:
                s = Socket(len(state.sockets), state.runtime)
                state.sockets.append(s)
            s._in_use = True
        s.remote_side = remote_side
        s.user = user
        s.on_edge_triggered_events = on_edge_triggered_events
        s._health_check_interval_s = health_check_interval_s
        s.created_by_connect = created_by_connect
        if fd is not None:
            s.ResetFileDescriptor(fd)
        return s.id()

    @staticmethod
    def Address(socket_id: int, runtime=None):
        """The live socket behind ``socket_id``, or None (failed, recycled, or never made).

        brpc: src/brpc/versioned_ref_with_id.h, Address
        """
        state = rpc_state(runtime)
        slot = socket_id & 0xFFFFFFFF
        if slot >= len(state.sockets):
            return None
        s = state.sockets[slot]
        if s._in_use and s.version == socket_id >> 32 and not s.version & 1:
            return s
        return None

    @staticmethod
    def AddressFailedAsWell(socket_id: int, runtime=None):
        """The socket even if failed (not yet recycled), or None."""
        state = rpc_state(runtime)
        slot = socket_id & 0xFFFFFFFF
        if slot >= len(state.sockets):
            return None
        s = state.sockets[slot]
        if s._in_use and (s.version & ~1) == (socket_id >> 32):
            return s
        return None

    def Failed(self) -> bool:
        return bool(self.version & 1)

    def IsAvailable(self) -> bool:
        return not self._logoff

    def SetLogOff(self) -> None:
        self._logoff = True

    def ResetFileDescriptor(self, fd) -> None:
        """Adopt a connected (or accepted) fd: non-blocking, TCP_NODELAY, added to a dispatcher."""
        fd.setblocking(False)
        try:
            fd.setsockopt(_pysocket.IPPROTO_TCP, _pysocket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.fd = fd
        try:
            self.local_side = fd.getsockname()[:2]
            if self.remote_side is None:
                self.remote_side = fd.getpeername()[:2]
        except OSError:
            pass
        rpc_state(self.runtime).get_dispatcher(self.id()).AddConsumer(self.id(), fd.fileno())

    # -- failure -------------------------------------------------------------------------------
    def SetFailed(self, error_code: int = EFAILEDSOCKET, error_text: str = "") -> int:
        """Fail the socket once: version +1, close the fd, tell every waiting RPC.

        brpc: src/brpc/socket.cpp, Socket::SetFailed / OnFailed
        """
        with self._lock:
            if self.version & 1 or not self._in_use:
                return -1
            self.version += 1
            self._error_code = error_code or EFAILEDSOCKET
            self._error_text = error_text or berror(self._error_code)
            ids, self._id_wait_list = self._id_wait_list, []
        self.runtime_emit("socket_failed", f"{self.label} [E{self._error_code}]")
        self._close_fd()
        self._epollout_butex.value += 1
        butex_wake_except(self._epollout_butex, 0)
        for cid in ids:
            bthread_id_error2(cid, self._error_code, self._error_text)
        for child in list(self._pool):
            s = Socket.Address(child, self.runtime)
            if s is not None:
                s.SetFailed(self._error_code, self._error_text)
        self._pool.clear()
        if self._health_check_interval_s > 0:
            self._health_check_tid = bthread_start_background(
                self._HealthCheck, attr=BthreadAttr(name="HealthCheck"))
        else:
            self._recycle()
        return 0

    def runtime_emit(self, kind, detail):
        # the RPC path's callers test ``self.runtime._instruments`` first: no text when unwatched
        self.runtime._emit(kind, self.runtime._current_meta(), detail)

    def _close_fd(self) -> None:
        fd = self.fd
        self.fd = None
        if fd is None:
            return
        try:
            fileno = fd.fileno()
            if fileno >= 0:
                state = getattr(self.runtime, "_rpc", None)
                if state is not None and state.dispatchers:
                    state.get_dispatcher(self.id()).RemoveConsumer(fileno)
        finally:
            fd.close()

    def _recycle(self) -> None:
        state = getattr(self.runtime, "_rpc", None)
        with self._lock:
            if not self._in_use:
                return
            self._in_use = False
            # This object stays failed (odd) for anyone still holding it; the slot's next life
            # starts at the next even version. (A temporary connect socket is recycled by
            # _FinishConnect without ever failing, so it may still be even here.)
            if not self.version & 1:
                self.version += 1
            self._next_version = self.version + 1
        if state is not None:
            with state.lock:
                state._free.append(self.slot)
        # brpc: Socket::BeforeRecycled tells the socket's user (SocketUser::BeforeRecycle); a
        # server's Acceptor forgets the connection there, or stops waiting for its listening fd
        before_recycle = getattr(self.user, "BeforeRecycle", None)
        if before_recycle is not None:
            before_recycle(self)

    def _HealthCheck(self) -> None:
        """Client main socket: reconnect every interval; on success, Revive (brpc: HealthCheckTask)."""
        while self._in_use and self._health_check_interval_s > 0:
            bthread_usleep(int(self._health_check_interval_s * 1_000_000))
            if not self._in_use or self._health_check_interval_s <= 0:
                return
            try:
                probe = _pysocket.create_connection(self.remote_side, timeout=0.2)
                probe.close()
            except OSError:
                continue
            self.Revive()
            return

    def Revive(self) -> None:
        """Make a failed, health-checked socket usable again with the same id (fd -1: it
        reconnects on the next write). brpc: Socket::Revive"""
        with self._lock:
            if not self.version & 1:
                return
            self.version -= 1
            self._error_code = 0
            self._error_text = ""
            self._write_head = None
            self._read_buf = IOBuf()
            self._nevent = 0
            self._connecting = False
        self.runtime_emit("socket_revived", self.label)

    # -- the id wait list ----------------------------------------------------------------------
    def NotifyOnFailed(self, cid: int) -> None:
        """Register an RPC to hear of a later failure, or tell it now. brpc: NotifyOnFailed"""
        with self._lock:
            if not self.version & 1:
                if len(self._id_wait_list) >= 64:
                    self._id_wait_list = [i for i in self._id_wait_list if _id_alive(i)]
                self._id_wait_list.append(cid)
                return
            code, text = self._error_code, self._error_text
        bthread_id_error2(cid, code, text)

    # -- write ---------------------------------------------------------------------------------
    def Write(self, data, id_wait: int = 0, abstime_us=None, ignore_eovercrowded: bool = False) -> int:
        """Queue ``data``; failures reach ``id_wait`` through ``bthread_id_error2`` (returns 0).

        brpc: src/brpc/socket.cpp, Socket::Write
        """
        if not isinstance(data, IOBuf):
            data = IOBuf(data)
        if not len(data):
            return self._SetError(id_wait, _errno.EINVAL, "empty data")
        if self.Failed():
            return self._SetError(id_wait, self._error_code, self._error_text)
        if self._overcrowded and not ignore_eovercrowded:
            return self._SetError(id_wait, EOVERCROWDED, f"Too many unwritten bytes to {endpoint2str(self.remote_side)}")
        req = WriteRequest(data, id_wait, self)
        return self.StartWrite(req, abstime_us)

    def _SetError(self, id_wait, code, text) -> int:
        if id_wait:
            bthread_id_error2(id_wait, code, text)
            return 0
        return -code

    def StartWrite(self, req: WriteRequest, abstime_us) -> int:
        """brpc: src/brpc/socket.cpp, Socket::StartWrite"""
        with self._write_lock:
            prev = self._write_head
            self._write_head = req
            req.next = prev
        if prev is not None:
            if self.runtime._instruments:
                self.runtime_emit("write_queued", f"{self.label}: behind the writer that owns it")
            return 0
        # this caller owns the write right
        rc = self.ConnectIfNot(abstime_us, req)
        if rc < 0:
            self.SetFailed(self._error_code or _errno.ECONNREFUSED, self._error_text)
            self.ReleaseAllFailedWriteRequests(req)
            return -1
        if rc > 0:
            return 0            # connecting: KeepWrite starts once connected
        req.Setup(self)
        try:
            nw = req.data.write_to(self.fd)
        except BlockingIOError:
            nw = 0
        except OSError as exc:
            self.SetFailed(exc.errno or EFAILEDSOCKET,
                           f"Fail to write into {self.label} {endpoint2str(self.remote_side)}: {exc.strerror}")
            self.ReleaseAllFailedWriteRequests(req)
            return -1
        self._AddOutputBytes(nw)
        if self.runtime._instruments:
            self.runtime_emit("write", f"{self.label}: {nw} bytes inline")
        if self.IsWriteComplete(req, True)[0]:
            self.ReturnSuccessfulWriteRequest(req)
            return 0
        bthread_start_background(self.KeepWrite, req, attr=_KEEP_WRITE_ATTR)
        return 0

    def _AddOutputBytes(self, n: int) -> None:
        self.nwritten += n
        self._unwritten_bytes -= n
        if self._overcrowded and self._unwritten_bytes < FLAGS.socket_max_unwritten_bytes:
            self._overcrowded = False

    def IsWriteComplete(self, old_head: WriteRequest, singular: bool):
        """(complete?, new_tail): CAS the head back, or adopt the newcomers in FIFO order.

        brpc: src/brpc/socket.cpp, Socket::IsWriteComplete
        """
        with self._write_lock:
            if old_head.data.empty() and singular:
                desired, return_when_no_more = None, True
            else:
                desired, return_when_no_more = old_head, False
            if self._write_head is old_head:
                self._write_head = desired
                return return_when_no_more, old_head
            new_head = self._write_head
            # newcomers are linked newest -> oldest down to old_head; reverse them
            tail = None
            p = new_head
            while p is not old_head:
                saved_next = p.next
                p.next = tail
                tail = p
                p = saved_next
            old_head.next = tail
        q = tail
        while q is not None:
            q.Setup(self)
            q = q.next
        return False, new_head

    def ReturnSuccessfulWriteRequest(self, req: WriteRequest) -> None:
        """brpc: Socket::ReturnSuccessfulWriteRequest (register the RPC to hear of failures)."""
        if req.id_wait:
            self.NotifyOnFailed(req.id_wait)

    def ReturnFailedWriteRequest(self, req: WriteRequest, code, text) -> None:
        self._unwritten_bytes -= len(req.data) if req.setup_done else 0
        if req.id_wait:
            bthread_id_error2(req.id_wait, code, text)

    def ReleaseAllFailedWriteRequests(self, req: WriteRequest) -> None:
        """Error every queued request with the socket's error. brpc: same name"""
        code, text = self._error_code or EFAILEDSOCKET, self._error_text
        while True:
            while req.next is not None:
                saved = req
                req = req.next
                self.ReturnFailedWriteRequest(saved, code, text)
            req.data.clear()
            complete, _ = self.IsWriteComplete(req, True)
            if complete:
                break
        self.ReturnFailedWriteRequest(req, code, text)

    def _DoWrite(self, req: WriteRequest) -> int:
        """writev the data of up to DATA_LIST_MAX queued requests. brpc: Socket::DoWrite"""
        chunks = []
        p = req
        n = 0
        while p is not None and n < DATA_LIST_MAX:
            chunks.extend(p.data.chunks())
            p = p.next
            n += 1
        if not chunks:
            return 0
        nw = self.fd.sendmsg(chunks)
        left = nw
        p = req
        while left > 0 and p is not None:
            k = min(left, len(p.data))
            p.data.pop_front(k)
            left -= k
            p = p.next
        return nw

    def KeepWrite(self, req: WriteRequest) -> None:
        """The bthread that finishes what the first writer could not. brpc: Socket::KeepWrite"""
        cur_tail = None
        while True:
            if req.next is not None and req.data.empty():
                saved, req = req, req.next
                self.ReturnSuccessfulWriteRequest(saved)
            if self.fd is None:
                break
            try:
                nw = self._DoWrite(req)
            except BlockingIOError:
                nw = 0
            except OSError as exc:
                self.SetFailed(exc.errno or EFAILEDSOCKET,
                               f"Fail to keep-write into {self.label}: {exc.strerror}")
                break
            self._AddOutputBytes(nw)
            if nw:
                if self.runtime._instruments:
                    # a checkpoint: rt.pause_at("write") stops KeepWrite between two writes
                    self.runtime.checkpoint("write", f"{self.label}: {nw} bytes by KeepWrite")
            while req.next is not None and req.data.empty():
                saved, req = req, req.next
                self.ReturnSuccessfulWriteRequest(saved)
            if nw <= 0 and not req.data.empty():
                rc = self.WaitEpollOut(KEEPWRITE_WAIT_EPOLLOUT_US)
                if rc not in (0, _errno.ETIMEDOUT, _errno.EWOULDBLOCK):
                    self.SetFailed(rc, f"Fail to wait EPOLLOUT of {self.label}")
                    break
            if cur_tail is None:
                cur_tail = req
                while cur_tail.next is not None:
                    cur_tail = cur_tail.next
            complete, cur_tail = self.IsWriteComplete(cur_tail, req is cur_tail)
            if complete:
                self.ReturnSuccessfulWriteRequest(req)
                return
            if self.Failed():
                break
        self.ReleaseAllFailedWriteRequests(req)

    def WaitEpollOut(self, timeout_us: int) -> int:
        """Wait until the fd is writable (or timeout). brpc: Socket::WaitEpollOut"""
        if self.fd is None:
            return EFAILEDSOCKET
        disp = rpc_state(self.runtime).get_dispatcher(self.id())
        expected = self._epollout_butex.value
        disp.RegisterEvent(self.id(), self.fd.fileno(), True)
        try:
            rc = butex_wait(self._epollout_butex, expected, timeout_us=timeout_us)
        finally:
            if self.fd is not None:
                disp.UnregisterEvent(self.id(), self.fd.fileno(), True)
        if self.Failed():
            return self._error_code
        return 0 if rc in (0, _errno.EWOULDBLOCK) else rc

    # -- connect on first write ----------------------------------------------------------------
    def ConnectIfNot(self, abstime_us, req: WriteRequest) -> int:
        """0: connected; 1: connecting (data goes out later); -1: failed at once.

        brpc: src/brpc/socket.cpp, Socket::ConnectIfNot / Connect
        """
        if self.fd is not None:
            return 0
        fd = _pysocket.socket(_pysocket.AF_INET, _pysocket.SOCK_STREAM)
        fd.setblocking(False)
        rc = fd.connect_ex(self.remote_side)
        if rc not in (0, _errno.EINPROGRESS):
            fd.close()
            self._error_code = rc
            self._error_text = f"Fail to connect {self.label} {endpoint2str(self.remote_side)} directly: {berror(rc)}"
            return -1
        self._connecting = True
        self.runtime_emit("connect", f"{self.label} (non-blocking, EINPROGRESS)")
        request = EpollOutRequest(fd, Socket._KeepWriteIfConnected, (self.id(), req))
        temp_id = Socket.Create(remote_side=self.remote_side, runtime=self.runtime)
        temp = Socket.Address(temp_id, self.runtime)
        temp._epollout_request = request
        rpc_state(self.runtime).get_dispatcher(temp_id).RegisterEvent(temp_id, fd.fileno(), False)
        if abstime_us is not None:
            from ..bthread import bthread_timer_add
            request.timer_id = bthread_timer_add(Socket._HandleEpollOutTimeout, abstime_us, temp_id)
        return 1

    @staticmethod
    def _HandleEpollOutTimeout(temp_id: int) -> None:
        """Timer: the connect took too long. brpc: Socket::HandleEpollOutTimeout"""
        temp = Socket.Address(temp_id)
        if temp is not None:
            temp._FinishConnect(_errno.ETIMEDOUT)

    @staticmethod
    def HandleEpollOut(socket_id: int) -> None:
        """The dispatcher saw EPOLLOUT: finish a connect, or wake KeepWrite.

        brpc: src/brpc/socket.cpp, Socket::HandleEpollOut (``Socket::OnOutputEvent`` in current brpc)
        """
        s = Socket.AddressFailedAsWell(socket_id)
        if s is None:
            return
        if s._epollout_request is not None:
            s._FinishConnect(0)
            return
        s._epollout_butex.value += 1
        butex_wake_except(s._epollout_butex, 0)

    def _FinishConnect(self, err: int) -> None:
        """Exactly one of EPOLLOUT and the timer gets here first. brpc: HandleEpollOutRequest"""
        request = self._epollout_request
        with self._lock:
            if request is None or request.done:
                return
            request.done = True
        if request.timer_id:
            from ..bthread import bthread_timer_del
            bthread_timer_del(request.timer_id)
        disp = rpc_state(self.runtime).get_dispatcher(self.id())
        disp.UnregisterEvent(self.id(), request.fd.fileno(), False)
        self._epollout_request = None
        self._recycle()
        if err == 0:
            err = request.fd.getsockopt(_pysocket.SOL_SOCKET, _pysocket.SO_ERROR)
        request.on_epollout_event(request.fd, err, request.data)

    @staticmethod
    def _KeepWriteIfConnected(fd, err, data) -> None:
        """brpc: Socket::KeepWriteIfConnected / CheckConnectedAndKeepWrite / AfterAppConnected"""
        socket_id, req = data
        s = Socket.Address(socket_id)
        if s is None:
            fd.close()
            return
        s._connecting = False
        if err == 0:
            s.ResetFileDescriptor(fd)
            s.runtime_emit("connected", f"{s.label}")
            req.Setup(s)
            bthread_start_background(s.KeepWrite, req, attr=_KEEP_WRITE_ATTR)
            return
        fd.close()
        s.SetFailed(err, f"Fail to connect {s.label} {endpoint2str(s.remote_side)}: {berror(err)}")
        s.ReleaseAllFailedWriteRequests(req)

    # -- read ----------------------------------------------------------------------------------
    @staticmethod
    def StartInputEvent(socket_id: int, events: int, runtime=None) -> None:
        """An edge on a readable fd: start a reader unless one runs.

        brpc: src/brpc/socket.cpp, Socket::StartInputEvent (``Socket::OnInputEvent`` in current
        brpc, which leaves the ``bthread_start_urgent`` to ``TcpTransport::ProcessEvent`` in
        src/brpc/tcp_transport.cpp)
        """
        s = Socket.Address(socket_id, runtime)
        if s is None:
            return
        if s.on_edge_triggered_events is None:
            # brpc: "Callback can be NULL when receiving error epoll events (Added into epoll by
            # WaitConnected)". A temporary connect socket has no reader; a refused connect reports
            # EPOLLERR|EPOLLHUP, which lands here (found by tests/rpc: TypeError in ProcessEvent).
            return
        with s._lock:
            s._nevent += 1
            nevent = s._nevent
        if nevent != 1:
            if s.runtime._instruments:
                s.runtime_emit("input_event", f"{s.label}: _nevent={nevent}, a reader is already running")
            return
        attr = _PROCESS_EVENT_ATTR
        if FLAGS.event_dispatcher_edisp_unsched:
            bthread_start_background(Socket.ProcessEvent, s, attr=attr)
        else:
            bthread_start_urgent(Socket.ProcessEvent, s, attr=attr)

    @staticmethod
    def ProcessEvent(s) -> None:
        """The reader bthread's entry. brpc: Socket::ProcessEvent (``Transport::OnEdge`` in current brpc)"""
        s.on_edge_triggered_events(s)

    def MoreReadEvents(self, progress: list) -> bool:
        """CAS ``_nevent`` from ``progress[0]`` to 0; on failure keep reading with the new count.

        brpc: src/brpc/socket_inl.h, Socket::MoreReadEvents
        """
        with self._lock:
            if self._nevent == progress[0]:
                self._nevent = 0
                return False
            progress[0] = self._nevent
            return True

    def DoRead(self, size_hint: int) -> int:
        """Append up to ``size_hint`` bytes from the fd to ``_read_buf``; -EAGAIN when none."""
        if self.fd is None:
            return -_errno.EBADF
        try:
            n = self._read_buf.append_from_socket(self.fd, size_hint)
        except BlockingIOError:
            return -_errno.EAGAIN
        except InterruptedError:
            return -_errno.EINTR
        except OSError as exc:
            return -(exc.errno or _errno.EIO)
        self.nread += n
        return n

    # -- connection types ----------------------------------------------------------------------
    def GetPooledSocket(self):
        """An idle pooled connection to the same server, or a new unconnected one.

        brpc: src/brpc/socket.cpp, Socket::GetPooledSocket
        """
        while self._pool:
            sid = self._pool.pop()
            s = Socket.Address(sid, self.runtime)
            if s is not None:
                return s
        sid = Socket.Create(remote_side=self.remote_side, created_by_connect=True, runtime=self.runtime,
                            on_edge_triggered_events=self.on_edge_triggered_events, user=self.user)
        s = Socket.Address(sid, self.runtime)
        s._main_socket_id = self.id()
        s.connection_type = "pooled"
        return s

    def ReturnToPool(self) -> None:
        """brpc: Socket::ReturnToPool"""
        main = Socket.Address(self._main_socket_id, self.runtime)
        if main is None or len(main._pool) >= FLAGS.max_connection_pool_size:
            self.SetFailed(EFAILEDSOCKET, "pool is full or its main socket is gone")
            return
        main._pool.append(self.id())

    def GetShortSocket(self):
        """A new connection for one RPC. brpc: Socket::GetShortSocket"""
        sid = Socket.Create(remote_side=self.remote_side, created_by_connect=True, runtime=self.runtime,
                            on_edge_triggered_events=self.on_edge_triggered_events, user=self.user)
        s = Socket.Address(sid, self.runtime)
        s._main_socket_id = self.id()
        s.connection_type = "short"
        return s


def _id_alive(cid: int) -> bool:
    meta = address_id(cid)
    return meta is not None and meta.has_version(cid & 0xFFFFFFFF)


def EEOF_text(s) -> str:
    return f"Got EOF of {s.label} {endpoint2str(s.remote_side)}"


__all__ = ["Socket", "WriteRequest", "rpc_state", "endpoint2str", "INVALID_SOCKET_ID", "EEOF", "EEOF_text"]
