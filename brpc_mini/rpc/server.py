"""Server and Acceptor: the serving side, on the same runtime as the client.

brpc: src/brpc/server.h, src/brpc/server.cpp, src/brpc/acceptor.h, src/brpc/acceptor.cpp

``Start`` listens and makes a Socket for the listening fd whose edge handler is the Acceptor's
``OnNewConnections``; every accepted connection becomes a Socket whose edge handler is the server's
InputMessenger, which cuts requests and runs ``ProcessRpcRequest`` — one bthread per request
except the last of each read, as on the client.

A service implementation is any object with a ``DESCRIPTOR`` (a protobuf ServiceDescriptor, or
pass ``descriptor=`` to ``AddService``) and one method per RPC:
``def Echo(self, cntl, request, response, done)`` that fills ``response`` and calls ``done.Run()``
(now, or later from another bthread).

**A request holds its connection until its response is sent.** In brpc the request's Controller
holds a reference on the Socket from ``ProcessRpcRequest`` until ``SendRpcResponse`` has written
the answer; the Acceptor keeps every accepted connection in ``_socket_map`` until the Socket is
recycled, which needs every reference gone. ``Stop`` therefore only stops listening and drops the
Acceptor's own ("additional") reference on each connection: an idle connection closes at once, a
busy one once its last in-flight request has been answered. ``Join`` waits for the listening socket
and for every connection to be gone — so for every request, including one whose ``done.Run()``
comes later from another bthread. The kit keeps the same count per connection in the Acceptor's
``_socket_map`` (``HoldConnection`` / ``ReleaseConnection``).

Python differences, all about requests that never end:

* brpc: a ``done`` that is never run leaks its request (and its connection) for good, so ``Join``
  waits forever. Python can tell when that has happened: once the service method has returned and
  nothing holds ``done`` any more, it can never run. The kit then ends the request without a
  response (a dropped answer, as ``EchoServer(drop=True)`` wants), releasing its connection and
  its ``max_concurrency`` slot.
* A ``done`` that is kept but never run, or a method that never returns, would still make
  ``Join`` wait forever, as in brpc. The kit gives up after ``Server.join_timeout_s`` (10 s,
  kit-only; brpc has no such limit): it logs an error, closes the connections still held and
  returns -1. A response sent after that finds its connection gone and is dropped.

Explained in: notebooks/06_response_path.ipynb
"""
from __future__ import annotations

import errno as _errno
import logging
import socket as _pysocket
import threading

from google.protobuf import message_factory

from ..bthread import (BthreadAttr, Butex, bthread_join, bthread_start_background, bthread_stop,
                       bthread_usleep, butex_wait, butex_wake_all)
from ..bthread.context import current_runtime
from .controller import FLAGS_ADDED_CONCURRENCY
from .errors import ELOGOFF, EUNUSED
from .input_messenger import Handler, InputMessenger
from .load_balancer import parse_endpoint
from .socket import PROGRESS_INIT, Socket, endpoint2str, rpc_state

log = logging.getLogger("brpc_mini.rpc")

# brpc: Server::Status and Acceptor::Status (src/brpc/server.h, src/brpc/acceptor.h), less
# UNINITIALIZED: a kit Server is READY once made
READY, RUNNING, STOPPING = "READY", "RUNNING", "STOPPING"

#: after accept() fails for another reason than a vanished client (EMFILE: out of fds), the
#: Acceptor retries after this long. brpc retries at once ("continue"), which spins a core for as
#: long as the error lasts; the kit waits a little between tries instead.
ACCEPT_RETRY_US = 10_000
#: how often the Acceptor looks for idle connections (brpc: CHECK_INTERVAL_US in acceptor.cpp)
CLOSE_IDLE_CHECK_INTERVAL_US = 1_000_000


def _int_option(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if name == "max_concurrency" and isinstance(value, str):
            raise ValueError(f"ServerOptions.max_concurrency={value!r}: the kit supports only a number "
                             "(brpc's named concurrency limiters such as \"auto\" are not implemented)")
        raise TypeError(f"ServerOptions.{name} must be an int, got {type(value).__name__}")
    return value


class ServerOptions:
    """brpc: src/brpc/server.h, ServerOptions (the part the kit implements; every field is honoured).

    ``idle_timeout_sec``: close a connection that has had no data in either direction for this
    many seconds, checked once a second by the Acceptor (<= 0: never; brpc's default -1). That
    check is a bthread sleeping in a loop until Join, so a deterministic runtime's ``run()`` does
    not end while such a server runs (use ``run_until``).
    ``max_concurrency``: answer ELIMIT once this many requests are being processed (<= 0:
    unlimited; brpc's default 0). ``ignore_eovercrowded``: serve requests that arrive on a
    connection whose unanswered bytes are over ``FLAGS.socket_max_unwritten_bytes`` instead of
    answering EOVERCROWDED (brpc's default false).
    """

    def __init__(self, idle_timeout_sec: int = -1, max_concurrency: int = 0,
                 ignore_eovercrowded: bool = False):
        self.idle_timeout_sec = idle_timeout_sec
        self.max_concurrency = max_concurrency
        self.ignore_eovercrowded = ignore_eovercrowded
        self.Check()

    def Check(self) -> None:
        """Raise TypeError/ValueError naming a field the kit cannot honour (also run by Start, for
        fields assigned after construction)."""
        _int_option("idle_timeout_sec", self.idle_timeout_sec)
        _int_option("max_concurrency", self.max_concurrency)
        if not isinstance(self.ignore_eovercrowded, bool):
            raise TypeError("ServerOptions.ignore_eovercrowded must be a bool, "
                            f"got {type(self.ignore_eovercrowded).__name__}")

    def __repr__(self) -> str:
        return (f"ServerOptions(idle_timeout_sec={self.idle_timeout_sec}, "
                f"max_concurrency={self.max_concurrency}, ignore_eovercrowded={self.ignore_eovercrowded})")


class ConnectStatistics:
    """One accepted connection in the Acceptor's ``_socket_map``.

    brpc: src/brpc/acceptor.h, ConnectStatistics (empty there: brpc's Socket keeps the reference
    count and the last read/write times itself). The kit keeps them here: ``nref`` counts the
    requests holding the connection, ``released`` says the Acceptor's own reference is gone (Stop,
    or idle), ``recycled`` that the Socket has failed.
    """
    __slots__ = ("nref", "released", "recycled", "reason", "activity", "last_active_us")

    def __init__(self, now_us: int):
        self.nref = 0
        self.released = False
        self.recycled = False
        self.reason = None
        self.activity = (0, 0)
        self.last_active_us = now_us


class Acceptor:
    """The listening socket's edge handler and the table of accepted connections.

    brpc: src/brpc/acceptor.h, src/brpc/acceptor.cpp, Acceptor
    """

    def __init__(self, server):
        self.server = server
        self.runtime = server.runtime
        self.status = READY
        self._map_mutex = threading.Lock()
        self._socket_map: dict = {}         # SocketId -> ConnectStatistics
        self._empty_cond = Butex(0, runtime=self.runtime, owner="Acceptor _empty_cond")
        self._acception_id = None
        self._listened = False              # brpc: _listened_fd > 0
        self._idle_timeout_sec = -1
        self._close_idle_tid = 0
        self._last_accept_error_us = None
        #: connections accepted so far (kit-only; brpc counts only the current ones)
        self.naccepted = 0

    # -- starting ------------------------------------------------------------------------------
    def StartAccept(self, listened_fd, idle_timeout_sec: int) -> None:
        """brpc: Acceptor::StartAccept"""
        with self._map_mutex:
            if self.status != READY:
                raise RuntimeError(f"Acceptor hasn't stopped yet: status={self.status}")
            self._idle_timeout_sec = idle_timeout_sec
            self._acception_id = Socket.Create(fd=listened_fd, user=self, runtime=self.runtime,
                                               on_edge_triggered_events=self.OnNewConnections)
            self._listened = True
            self.status = RUNNING
        if idle_timeout_sec > 0:
            self._close_idle_tid = bthread_start_background(
                self.CloseIdleConnections, attr=BthreadAttr(name="CloseIdleConnections"))

    # -- accepting -----------------------------------------------------------------------------
    def OnNewConnections(self, listen_socket) -> None:
        """Accept until EAGAIN, while edges keep coming. brpc: Acceptor::OnNewConnections"""
        progress = [PROGRESS_INIT]
        while True:
            self.OnNewConnectionsUntilEAGAIN(listen_socket)
            if listen_socket.Failed():
                return
            if not listen_socket.MoreReadEvents(progress):
                return

    def OnNewConnectionsUntilEAGAIN(self, listen_socket) -> None:
        """brpc: Acceptor::OnNewConnectionsUntilEAGAIN"""
        server = self.server
        while True:
            lfd = listen_socket.fd
            if lfd is None or listen_socket.Failed():
                return
            try:
                conn, addr = lfd.accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if listen_socket.fd is None or listen_socket.Failed():
                    return                      # Stop closed the listening fd meanwhile
                # brpc: never give up before EAGAIN: the fd is edge-triggered, so connections
                # left in the backlog would wait for the next client's edge. Log at most once a
                # second, as PLOG_EVERY_SECOND does.
                now = self.runtime.gettimeofday_us()
                if self._last_accept_error_us is None or now - self._last_accept_error_us >= 1_000_000:
                    self._last_accept_error_us = now
                    log.error("Fail to accept from listened_fd=%d: %s", lfd.fileno(), exc)
                if exc.errno != _errno.ECONNABORTED:
                    bthread_usleep(ACCEPT_RETRY_US)   # not brpc's hot retry: see ACCEPT_RETRY_US
                continue
            sid = Socket.Create(remote_side=addr[:2], fd=conn, user=server,
                                on_edge_triggered_events=server._messenger.OnNewMessages,
                                runtime=self.runtime)
            self.naccepted += 1
            server.runtime._emit("accept", None, f"Socket {sid & 0xFFFFFFFF}")
            # threads mode: the fd is in epoll from Create on, so another worker may already have
            # read EOF and failed (recycled) it, or even served a request on it (brpc's "funny race
            # condition"; that request added the connection to the map already).
            s = Socket.AddressFailedAsWell(sid, self.runtime)
            if s is None:
                continue
            with self._map_mutex:
                is_running = self.status == RUNNING
                if sid not in self._socket_map:
                    self._socket_map[sid] = ConnectStatistics(self.runtime.gettimeofday_us())
            if not s._in_use:
                self._OnRecycled(sid)           # recycled before it was in the map
            if not is_running:
                lfd = listen_socket.fd
                text = (f"Acceptor on fd={lfd.fileno() if lfd is not None else -1} has been stopped, "
                        f"discard newly created {s.label} {endpoint2str(s.remote_side)}")
                log.warning(text)
                s.SetFailed(ELOGOFF, text)
                return

    # -- the connections -----------------------------------------------------------------------
    def ConnectionCount(self) -> int:
        """Connections accepted and not yet recycled. brpc: Acceptor::ConnectionCount"""
        return len(self._socket_map)

    def ListConnections(self) -> list:
        """brpc: Acceptor::ListConnections"""
        with self._map_mutex:
            return list(self._socket_map)

    def HoldConnection(self, sid: int) -> None:
        """A request on ``sid`` starts: the connection stays until ReleaseConnection.

        brpc: the Socket reference ProcessRpcRequest moves into the Controller
        (``move_in_server_receiving_sock``), dropped when SendRpcResponse deletes the Controller.
        """
        with self._map_mutex:
            e = self._socket_map.get(sid)
            if e is None:
                # the request came before the accept path put the connection in the map, or after
                # the connection failed: add it, so that Join waits for this request too
                e = self._socket_map[sid] = ConnectStatistics(self.runtime.gettimeofday_us())
                s = Socket.AddressFailedAsWell(sid, self.runtime)
                e.recycled = s is None or not s._in_use
            e.nref += 1

    def ReleaseConnection(self, sid: int) -> None:
        """A request on ``sid`` has been answered (or dropped). The last one out closes the
        connection if the Acceptor has let it go. brpc: Socket::Dereference -> recycle"""
        close = None
        wake = False
        with self._map_mutex:
            e = self._socket_map.get(sid)
            if e is None:
                return                          # Join gave up on it already
            e.nref -= 1
            if e.nref > 0:
                return
            if e.recycled:
                del self._socket_map[sid]
                wake = self._Changed()
            elif e.released:
                close = e.reason
        if wake:
            butex_wake_all(self._empty_cond)
        if close is not None:
            self._Close(sid, close)

    def ReleaseAdditionalReference(self, sid: int, code: int, text: str) -> None:
        """Let the connection go: now if no request holds it, else after the last one is answered.

        brpc: Socket::ReleaseAdditionalReference (called by StopAccept and for idle connections)
        """
        with self._map_mutex:
            e = self._socket_map.get(sid)
            if e is None or e.released:
                return
            e.released = True
            e.reason = (code, text)
            close_now = e.nref == 0 and not e.recycled
        if close_now:
            self._Close(sid, (code, text))

    def _Close(self, sid: int, reason) -> None:
        s = Socket.Address(sid, self.runtime)
        if s is not None:
            s.SetFailed(*reason)                # recycles it: BeforeRecycle erases the entry
        # else: it failed already, and its BeforeRecycle erases the entry

    def BeforeRecycle(self, s) -> None:
        """The Socket ``s`` (the listening one, or a connection) failed and is recycled.

        brpc: Acceptor::BeforeRecycle. The kit recycles a Socket as soon as it fails; a
        connection with requests still in flight stays in the map until they are answered.
        """
        sid = ((s.version & ~1) << 32) | s.slot
        if sid == self._acception_id:
            with self._map_mutex:
                self._listened = False
                self._Changed()
            butex_wake_all(self._empty_cond)
            return
        self._OnRecycled(sid)

    def _OnRecycled(self, sid: int) -> None:
        wake = False
        with self._map_mutex:
            e = self._socket_map.get(sid)
            if e is None:
                return
            e.recycled = True
            if e.nref == 0:
                del self._socket_map[sid]
                wake = self._Changed()
        if wake:
            butex_wake_all(self._empty_cond)

    def _Changed(self) -> bool:
        """Under _map_mutex: tell Join to look again. brpc: _empty_cond.Broadcast()"""
        self._empty_cond.value += 1
        return True

    # -- idle connections ----------------------------------------------------------------------
    def CloseIdleConnections(self) -> None:
        """Once a second, let go of connections idle for ``idle_timeout_sec``.

        brpc: Acceptor::CloseIdleConnections and Socket::ReleaseReferenceIfIdle. brpc's Socket
        stamps its last read and write; the kit notices a change of the byte counts at each
        check, so a connection closes between ``idle_timeout_sec`` and about one second later
        than brpc's would.
        """
        rt = self.runtime
        while bthread_usleep(CLOSE_IDLE_CHECK_INTERVAL_US) == 0:
            idle_us = self._idle_timeout_sec * 1_000_000
            if idle_us <= 0:
                return
            now = rt.gettimeofday_us()
            idle = []
            for sid in self.ListConnections():
                s = Socket.Address(sid, rt)
                if s is None:
                    continue
                activity = (s.nread, s.nwritten)
                with self._map_mutex:
                    e = self._socket_map.get(sid)
                    if e is None:
                        continue
                    if activity != e.activity:
                        e.activity = activity
                        e.last_active_us = now
                    elif now - e.last_active_us > idle_us:
                        idle.append(sid)
            for sid in idle:
                log.debug("Close Socket %d due to no data transmission for %d seconds",
                          sid & 0xFFFFFFFF, self._idle_timeout_sec)
                self.ReleaseAdditionalReference(
                    sid, EUNUSED, f"No data transmission for {self._idle_timeout_sec} seconds")

    # -- stopping ------------------------------------------------------------------------------
    def StopAccept(self, closewait_ms: int = 0) -> None:
        """Stop listening and let every connection go once its requests are answered.

        brpc: Acceptor::StopAccept (``closewait_ms`` is unused there too)
        """
        with self._map_mutex:
            if self.status != RUNNING:
                return
            self.status = STOPPING
            self._Changed()
        butex_wake_all(self._empty_cond)
        ls = Socket.Address(self._acception_id, self.runtime)
        if ls is not None:
            ls.SetFailed(ELOGOFF, "Server is stopping")
        # Connections accepted from now on are failed in OnNewConnectionsUntilEAGAIN.
        for sid in self.ListConnections():
            self.ReleaseAdditionalReference(sid, ELOGOFF, "Server is stopping")

    def Join(self, timeout_s: float) -> int:
        """Wait until the listening socket and every connection are gone. brpc: Acceptor::Join

        Like brpc's it may start before StopAccept, and then waits for it. Kit-only: once stopping,
        it waits at most ``timeout_s`` for the in-flight requests, then closes what is left and
        returns -1 (brpc would wait forever).
        """
        rc = 0
        deadline = None
        with self._map_mutex:
            if self.status not in (RUNNING, STOPPING):
                return 0
        while True:
            with self._map_mutex:
                if not self._listened and not self._socket_map:
                    break
                expected = self._empty_cond.value
                stopping = self.status == STOPPING
            if stopping and deadline is None:
                deadline = self.runtime.gettimeofday_us() + int(timeout_s * 1_000_000)
            if butex_wait(self._empty_cond, expected, abstime_us=deadline) == _errno.ETIMEDOUT:
                rc = -1
                self._GiveUp(timeout_s)
                break
        with self._map_mutex:
            saved_idle_timeout_sec = self._idle_timeout_sec
            self._idle_timeout_sec = 0
            tid, self._close_idle_tid = self._close_idle_tid, 0
        if saved_idle_timeout_sec > 0 and tid:
            bthread_stop(tid)
            bthread_join(tid)
        with self._map_mutex:
            self.status = READY
        return rc

    def _GiveUp(self, timeout_s: float) -> None:
        with self._map_mutex:
            left = dict(self._socket_map)
            self._socket_map.clear()
            self._listened = False
        nref = sum(e.nref for e in left.values())
        log.error("Server.Join gave up after %ss: %d request(s) on %d connection(s) still unanswered "
                  "(a done never run, or a service method that never returns); closing them",
                  timeout_s, nref, len(left))
        for sid in left:
            s = Socket.Address(sid, self.runtime)
            if s is not None:
                s.SetFailed(ELOGOFF, "Server is stopping")


class Server:
    """brpc: src/brpc/server.h, Server"""

    #: kit-only: how long Join waits, once the server is stopping, for requests still in flight
    #: before it closes their connections and returns -1 (brpc waits forever). See the module
    #: docstring.
    join_timeout_s = 10.0

    def __init__(self, options: ServerOptions | None = None):
        if options is not None and not isinstance(options, ServerOptions):
            raise TypeError(f"options must be a ServerOptions, got {type(options).__name__}")
        self.options = options or ServerOptions()
        self._services: dict = {}       # full name -> (impl, descriptor, {method name: entry})
        self._status = READY
        self.runtime = None
        self._acceptor = None
        self._messenger = None
        self._concurrency = 0
        self._concurrency_lock = threading.Lock()
        self.listen_address = None

    @property
    def _listen_id(self):
        return self._acceptor._acception_id if self._acceptor is not None else None

    def AddService(self, impl, descriptor=None) -> int:
        """Register ``impl`` for its service. Raises on misuse; returns 0.

        brpc: Server::AddServiceInternal — refused, in this order: a service without methods, a
        server that is not READY (running, or stopped but not joined), a full name already added,
        and a short name (what undotted requests are routed by) already taken by another package.
        """
        descriptor = descriptor or getattr(impl, "DESCRIPTOR", None)
        if descriptor is None or not hasattr(descriptor, "methods") or not hasattr(descriptor, "full_name"):
            raise TypeError("AddService needs a protobuf ServiceDescriptor: give the implementation a "
                            "DESCRIPTOR attribute or pass descriptor=")
        full_name = descriptor.full_name
        if len(descriptor.methods) == 0:
            raise ValueError(f"service={full_name} does not have any method.")
        if self._status != READY:
            raise RuntimeError(f"Can't add service={full_name} to a server which is {self._status}"
                               + (" (call Join() after Stop() first)" if self._status == STOPPING else ""))
        if full_name in self._services:
            raise ValueError(f"service={full_name} already exists")
        old = self.FindServiceByName(full_name.rsplit(".", 1)[-1])
        if old is not None:
            raise ValueError(f"Conflict service name between {full_name} and {old[1].full_name} "
                             f"(requests naming the service without its package could not tell them apart)")
        methods = {}
        for m in descriptor.methods:
            methods[m.name] = (impl, m, message_factory.GetMessageClass(m.input_type),
                               message_factory.GetMessageClass(m.output_type))
        self._services[full_name] = (impl, descriptor, methods)
        return 0

    def FindMethod(self, service_name: str, method_name: str):
        entry = self._services.get(service_name)
        if entry is None and "." not in service_name:
            entry = self.FindServiceByName(service_name)
        if entry is None:
            return None
        return entry[2].get(method_name)

    def FindServiceByName(self, short_name: str):
        for full_name, entry in self._services.items():
            if full_name.rsplit(".", 1)[-1] == short_name:
                return entry
        return None

    def IsRunning(self) -> bool:
        return self._status == RUNNING

    def status(self) -> str:
        """READY, RUNNING or STOPPING (stopped, not yet joined). brpc: Server::status"""
        return self._status

    def Start(self, address="127.0.0.1:0") -> int:
        """Listen on ``address`` (``"ip:port"``, or a port number for 127.0.0.1 — brpc would
        take 0.0.0.0); returns the bound port. Raises OSError naming the address on failure."""
        from .policy.baidu_rpc_protocol import ParseRpcMessage, ProcessRpcRequest
        if self._status == RUNNING:
            raise RuntimeError(f"Server is already running on {endpoint2str(self.listen_address)}")
        if self._status != READY:
            raise RuntimeError(f"Can't start a server which is {self._status}: call Join() after Stop() first")
        self.options.Check()
        if isinstance(address, int):
            address = f"127.0.0.1:{address}"
        endpoint = parse_endpoint(address)
        self.runtime = current_runtime()
        state = rpc_state(self.runtime)
        self._messenger = InputMessenger([Handler(ParseRpcMessage, ProcessRpcRequest, "baidu_std", 2)],
                                         arg=self, server_side=True)
        lfd = _pysocket.socket(_pysocket.AF_INET, _pysocket.SOCK_STREAM)
        lfd.setsockopt(_pysocket.SOL_SOCKET, _pysocket.SO_REUSEADDR, 1)
        try:
            lfd.bind(endpoint)
            lfd.listen(1024)
        except OSError as exc:
            lfd.close()
            raise OSError(exc.errno, f"Fail to listen {endpoint2str(endpoint)}: {exc.strerror}") from None
        self.listen_address = lfd.getsockname()[:2]
        self._concurrency = 0
        self._acceptor = Acceptor(self)
        self._status = RUNNING
        self._acceptor.StartAccept(lfd, self.options.idle_timeout_sec)
        state.servers.append(self)
        self.runtime._emit("server_start", None, f"listening, {len(self._services)} service(s)")
        return self.listen_address[1]

    # -- what ProcessRpcRequest / SendRpcResponse ask (brpc: ServerPrivateAccessor) ---------------
    def _AddConcurrency(self, cntl) -> bool:
        """True unless ``max_concurrency`` is reached. brpc: ServerPrivateAccessor::AddConcurrency
        (the request is counted even when refused, and uncounted when its response is sent)."""
        limit = self.options.max_concurrency
        if limit <= 0:
            return True
        cntl._flags |= FLAGS_ADDED_CONCURRENCY
        with self._concurrency_lock:
            self._concurrency += 1
            return self._concurrency <= limit

    def _RemoveConcurrency(self, cntl) -> None:
        """brpc: ServerPrivateAccessor::RemoveConcurrency"""
        if cntl._flags & FLAGS_ADDED_CONCURRENCY:
            cntl._flags &= ~FLAGS_ADDED_CONCURRENCY
            with self._concurrency_lock:
                self._concurrency -= 1

    def BeforeRecycle(self, s) -> None:
        """An accepted connection (whose Socket user is this server) is recycled."""
        if self._acceptor is not None:
            self._acceptor.BeforeRecycle(s)

    # -- stopping ----------------------------------------------------------------------------------
    def Stop(self, closewait_ms: int = 0) -> int:
        """Stop listening; each connection closes once its in-flight requests are answered.

        brpc: Server::Stop (``closewait_ms`` is unused there too). Requests arriving meanwhile on
        a connection still open are answered ELOGOFF "Server is stopping". Returns -1 if the
        server is not running.
        """
        if self._status != RUNNING:
            return -1
        self._status = STOPPING
        self._acceptor.StopAccept(closewait_ms)
        return 0

    def Join(self) -> int:
        """Wait until every connection is closed, so every in-flight request answered (a
        ``done.Run()`` that comes later from another bthread too). brpc: Server::Join

        May be called before Stop, from another thread: it then waits for Stop, as brpc's does.
        Returns -1 if the server is neither running nor stopping, and (kit-only) if it gave up
        after ``join_timeout_s`` with requests still unanswered.
        """
        if self._status not in (RUNNING, STOPPING):
            return -1
        rc = self._acceptor.Join(self.join_timeout_s)
        state = getattr(self.runtime, "_rpc", None)
        if state is not None and self in state.servers:
            state.servers.remove(self)
        self._status = READY
        return rc

    def __repr__(self) -> str:
        where = endpoint2str(self.listen_address) if self.listen_address else "not started"
        return f"<Server {where} {self._status} services={list(self._services)}>"
