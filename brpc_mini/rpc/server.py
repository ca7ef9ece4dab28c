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

Explained in: notebooks/06_response_path.ipynb
"""
from __future__ import annotations

import errno as _errno
import logging
import socket as _pysocket

from google.protobuf import message_factory

from ..bthread import Butex, butex_wait, butex_wake_all
from ..bthread.context import current_runtime
from .errors import ELOGOFF
from .input_messenger import Handler, InputMessenger
from .load_balancer import parse_endpoint
from .socket import PROGRESS_INIT, Socket, endpoint2str, rpc_state

log = logging.getLogger("brpc_mini.rpc")


class ServerOptions:
    """brpc: src/brpc/server.h, ServerOptions (the part the kit uses)."""

    def __init__(self, idle_timeout_sec: int = -1, max_concurrency: int = 0):
        self.idle_timeout_sec = idle_timeout_sec
        self.max_concurrency = max_concurrency


class Acceptor:
    """The listening socket's edge handler. brpc: src/brpc/acceptor.cpp, Acceptor"""

    def __init__(self, server):
        self.server = server
        self.connections: list = []

    def OnNewConnections(self, listen_socket) -> None:
        """Accept until EAGAIN, while edges keep coming. brpc: Acceptor::OnNewConnections"""
        progress = [PROGRESS_INIT]
        while True:
            self.OnNewConnectionsUntilEAGAIN(listen_socket)
            if not listen_socket.MoreReadEvents(progress):
                return

    def OnNewConnectionsUntilEAGAIN(self, listen_socket) -> None:
        server = self.server
        while listen_socket.fd is not None:
            try:
                conn, addr = listen_socket.fd.accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                log.warning("Fail to accept from %s: %s", listen_socket.label, exc)
                return
            sid = Socket.Create(remote_side=addr[:2], fd=conn, user=server,
                                on_edge_triggered_events=server._messenger.OnNewMessages,
                                runtime=server.runtime)
            s = Socket.Address(sid, server.runtime)
            # threads mode: the fd is in epoll from Create on, so another worker may already have
            # read EOF and failed (recycled) it; Address is then None (found by tests/rpc:
            # AttributeError here when a client closed right after connecting).
            server.runtime._emit("accept", None, f"Socket {sid & 0xFFFFFFFF}")
            self.connections.append(sid)
            if not server.IsRunning() and s is not None:
                s.SetFailed(ELOGOFF, "Server is stopping")


class Server:
    """brpc: src/brpc/server.h, Server"""

    def __init__(self, options: ServerOptions | None = None):
        self.options = options or ServerOptions()
        self._services: dict = {}       # full name -> (impl, descriptor, {method name: entry})
        self.runtime = None
        self._listen_id = 0
        self._acceptor = None
        self._running = False
        self._messenger = None
        self._inflight = None
        self.listen_address = None

    def AddService(self, impl, descriptor=None) -> int:
        """Register ``impl`` for its service. Raises on misuse; returns 0."""
        descriptor = descriptor or getattr(impl, "DESCRIPTOR", None)
        if descriptor is None or not hasattr(descriptor, "methods") or not hasattr(descriptor, "full_name"):
            raise TypeError("AddService needs a protobuf ServiceDescriptor: give the implementation a "
                            "DESCRIPTOR attribute or pass descriptor=")
        if self._running:
            raise RuntimeError("AddService after Start")
        if descriptor.full_name in self._services:
            raise ValueError(f"service {descriptor.full_name} was already added")
        methods = {}
        for m in descriptor.methods:
            methods[m.name] = (impl, m, message_factory.GetMessageClass(m.input_type),
                               message_factory.GetMessageClass(m.output_type))
        self._services[descriptor.full_name] = (impl, descriptor, methods)
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
        return self._running

    def Start(self, address="127.0.0.1:0") -> int:
        """Listen on ``address`` (``"ip:port"``, or a port number for 127.0.0.1 — brpc would
        take 0.0.0.0); returns the bound port. Raises OSError naming the address on failure."""
        from .policy.baidu_rpc_protocol import ParseRpcMessage, ProcessRpcRequest
        if self._running:
            raise RuntimeError("Server is already started")
        if isinstance(address, int):
            address = f"127.0.0.1:{address}"
        endpoint = parse_endpoint(address)
        self.runtime = current_runtime()
        state = rpc_state(self.runtime)
        self._messenger = InputMessenger([Handler(ParseRpcMessage, ProcessRpcRequest, "baidu_std", 2)],
                                         arg=self, server_side=True)
        self._inflight = Butex(0, runtime=self.runtime, owner="Server in-flight requests")
        lfd = _pysocket.socket(_pysocket.AF_INET, _pysocket.SOCK_STREAM)
        lfd.setsockopt(_pysocket.SOL_SOCKET, _pysocket.SO_REUSEADDR, 1)
        try:
            lfd.bind(endpoint)
            lfd.listen(1024)
        except OSError as exc:
            lfd.close()
            raise OSError(exc.errno, f"Fail to listen {endpoint2str(endpoint)}: {exc.strerror}") from None
        self.listen_address = lfd.getsockname()[:2]
        self._acceptor = Acceptor(self)
        self._running = True
        self._listen_id = Socket.Create(fd=lfd, user=self._acceptor, runtime=self.runtime,
                                        on_edge_triggered_events=self._acceptor.OnNewConnections)
        state.servers.append(self)
        self.runtime._emit("server_start", None, f"listening, {len(self._services)} service(s)")
        return self.listen_address[1]

    def _OnRequestBegin(self) -> None:
        self._inflight.value += 1

    def _OnRequestEnd(self) -> None:
        self._inflight.value -= 1
        if self._inflight.value == 0:
            butex_wake_all(self._inflight)

    def Stop(self, closewait_ms: int = 0) -> int:
        """Stop accepting and close the connections. brpc: Server::Stop"""
        if not self._running:
            return 0
        self._running = False
        s = Socket.Address(self._listen_id, self.runtime)
        if s is not None:
            s.SetFailed(ELOGOFF, "Server is stopping")
        for sid in self._acceptor.connections:
            c = Socket.Address(sid, self.runtime)
            if c is not None:
                c.SetFailed(ELOGOFF, "Server is stopping")
        return 0

    def Join(self) -> int:
        """Wait until the requests being processed are done. brpc: Server::Join"""
        if self._inflight is None:
            return 0
        while self._inflight.value != 0:
            butex_wait(self._inflight, self._inflight.value)
        state = getattr(self.runtime, "_rpc", None)
        if state is not None and self in state.servers:
            state.servers.remove(self)
        return 0

    def __repr__(self) -> str:
        where = endpoint2str(self.listen_address) if self.listen_address else "not started"
        return f"<Server {where} services={list(self._services)}>"
