"""Channel: where a client's RPCs start.

brpc: src/brpc/channel.h, src/brpc/channel.cpp

``Init`` resolves the server (or the ``list://`` servers and a load balancer) and shares, through
the runtime's socket map, one **main socket** per server: created unconnected, it connects on its
first write. ``CallMethod`` is the seed's function, line by line: fill the Controller from the
options, lock the correlation id with ``bthread_id_lock_and_reset_range(cid, 2 + max_retry)``,
serialize the request, arm *one* timer (backup request, else timeout), ``IssueRPC``, and — for a
synchronous call — ``Join`` the id until the response path destroys it.

The protobuf Python stub convention is kept: ``CallMethod(method_descriptor, controller, request,
response_class, done)`` returns the response when ``done`` is None; otherwise it returns None at
once and ``done(response)`` runs on a bthread when the RPC ends.

Explained in: notebooks/04_channel_callmethod.ipynb
"""
from __future__ import annotations

import copy
import errno as _errno
import logging

from ..bthread import (bthread_id_error, bthread_id_join, bthread_id_lock_and_reset_range,
                       bthread_timer_add)
from ..bthread.context import current_runtime
from .controller import (CONNECTION_TYPE_NAMES, CONNECTION_TYPE_SINGLE, CONNECTION_TYPE_UNKNOWN, FLAGS_USED_BY_RPC,
                         UNSET_MAGIC_NUM, Controller, StringToConnectionType)
from .errors import EBACKUPREQUEST, ECANCELED, EREQUEST, ERPCTIMEDOUT
from .flags import FLAGS
from .input_messenger import Handler, InputMessenger
from .policy.baidu_rpc_protocol import SerializeRpcRequest
from .load_balancer import LOAD_BALANCERS, parse_endpoint, parse_list_naming_service
from .socket import INVALID_SOCKET_ID, Socket, endpoint2str, rpc_state

log = logging.getLogger("brpc_mini.rpc")

PROTOCOL_BAIDU_STD = 2


class ChannelOptions:
    """brpc: src/brpc/channel.h, ChannelOptions (defaults from src/brpc/channel.cpp)."""

    def __init__(self, connect_timeout_ms: int = 200, timeout_ms: int = 500, backup_request_ms: int = -1,
                 max_retry: int = 3, protocol: str = "baidu_std", connection_type: str = "",
                 connection_group: str = ""):
        self.connect_timeout_ms = connect_timeout_ms
        self.timeout_ms = timeout_ms
        self.backup_request_ms = backup_request_ms
        self.max_retry = max_retry
        self.protocol = protocol
        self.connection_type = connection_type
        self.connection_group = connection_group
        self.retry_policy = None

    def __repr__(self) -> str:
        return (f"ChannelOptions(protocol={self.protocol!r}, connection_type={self.connection_type!r}, "
                f"timeout_ms={self.timeout_ms}, connect_timeout_ms={self.connect_timeout_ms}, "
                f"max_retry={self.max_retry}, backup_request_ms={self.backup_request_ms})")


def client_messenger(runtime=None) -> InputMessenger:
    """The runtime's client-side InputMessenger (brpc: get_or_new_client_side_messenger)."""
    state = rpc_state(runtime)
    if state.client_messenger is None:
        from .policy.baidu_rpc_protocol import ParseRpcMessage, ProcessRpcResponse
        state.client_messenger = InputMessenger(
            [Handler(ParseRpcMessage, ProcessRpcResponse, "baidu_std", PROTOCOL_BAIDU_STD)])
    return state.client_messenger


def SocketMapInsert(endpoint, signature: str, runtime) -> int:
    """Share one main socket per (server, signature). brpc: src/brpc/socket_map.cpp"""
    state = rpc_state(runtime)
    key = (endpoint, signature)
    with state.lock:
        entry = state.socket_map.get(key)
        if entry is not None and Socket.AddressFailedAsWell(entry[0], runtime) is not None:
            entry[1] += 1
            return entry[0]
    messenger = client_messenger(runtime)
    sid = Socket.Create(remote_side=endpoint, created_by_connect=True, runtime=runtime,
                        on_edge_triggered_events=messenger.OnNewMessages, user=messenger,
                        health_check_interval_s=FLAGS.health_check_interval)
    with state.lock:
        state.socket_map[key] = [sid, 1]
    return sid


def HandleTimeout(arg) -> None:
    """TimerThread: the RPC's deadline. brpc: src/brpc/channel.cpp, HandleTimeout"""
    bthread_id_error(arg, ERPCTIMEDOUT)


def HandleBackupRequest(arg) -> None:
    """TimerThread: time for a backup request. brpc: src/brpc/channel.cpp, HandleBackupRequest"""
    bthread_id_error(arg, EBACKUPREQUEST)


def Join(call_id: int) -> int:
    """Wait until the RPC of ``call_id`` has ended (its ``done`` has run). brpc: brpc::Join"""
    return bthread_id_join(call_id)


def StartCancel(call_id: int) -> int:
    """Cancel the RPC of ``call_id``: it ends with ECANCELED. brpc: brpc::StartCancel"""
    return bthread_id_error(call_id, ECANCELED)


class Channel:
    """A client's way to one server or a list of servers."""

    def __init__(self):
        self._options = None
        self._server_id = INVALID_SOCKET_ID
        self._server_address = None
        self._lb = None
        self._runtime = None
        self._preferred_index = PROTOCOL_BAIDU_STD

    def Init(self, server_or_naming_url, load_balancer_name_or_options=None, options=None) -> int:
        """``Init("host:port", options)`` or ``Init("list://a:1,b:2", "rr", options)``.

        brpc: src/brpc/channel.cpp, Channel::Init / InitChannelOptions / InitSingle
        Returns 0, or EINVAL with the reason logged.

        A deliberate simplification: brpc's Init also starts bthreads (``GlobalUpdate`` from
        ``GlobalInitializeOrDie``, src/brpc/global.cpp; ``RunWatchConnections`` when the first
        ``SocketMapInsert`` makes the client SocketMap, src/brpc/socket_map.cpp), so brpc's
        TaskControl exists after Init. The kit starts neither, as the seed's step 2 assumes.
        """
        if isinstance(load_balancer_name_or_options, ChannelOptions) or load_balancer_name_or_options is None:
            lb_name, opts = "", load_balancer_name_or_options
        else:
            lb_name, opts = load_balancer_name_or_options, options
        if opts is None:
            opts = ChannelOptions()
        if not isinstance(opts, ChannelOptions):
            log.error("Channel.Init: options must be a ChannelOptions, got %s", type(opts).__name__)
            return _errno.EINVAL
        if opts.protocol not in ("baidu_std", PROTOCOL_BAIDU_STD):
            log.error("Channel.Init: protocol %r is not supported (only baidu_std)", opts.protocol)
            return _errno.EINVAL
        try:
            ctype = StringToConnectionType(opts.connection_type)
        except ValueError as exc:
            log.error("Channel.Init: %s", exc)
            return _errno.EINVAL
        if ctype == CONNECTION_TYPE_UNKNOWN:
            ctype = CONNECTION_TYPE_SINGLE
        # brpc copies the options and writes the resolved connection type into its copy
        opts = copy.copy(opts)
        opts.connection_type = CONNECTION_TYPE_NAMES[ctype]
        self._options = opts
        self._connection_type = ctype
        self._runtime = current_runtime()
        if not isinstance(server_or_naming_url, str):
            log.error("Channel.Init: server must be a str, got %s", type(server_or_naming_url).__name__)
            return _errno.EINVAL
        try:
            if lb_name:
                if lb_name not in LOAD_BALANCERS:
                    log.error("Channel.Init: unknown load balancer %r (have: %s)", lb_name, ", ".join(LOAD_BALANCERS))
                    return _errno.EINVAL
                endpoints = parse_list_naming_service(server_or_naming_url)
                ids = [SocketMapInsert(ep, opts.connection_group, self._runtime) for ep in endpoints]
                self._lb = LOAD_BALANCERS[lb_name](ids, self._runtime)
            else:
                endpoint = parse_endpoint(server_or_naming_url)
                self._server_address = endpoint
                self._server_id = SocketMapInsert(endpoint, opts.connection_group, self._runtime)
        except ValueError as exc:
            log.error("Channel.Init: %s", exc)
            return _errno.EINVAL
        return 0

    def options(self) -> ChannelOptions:
        return self._options

    def SingleServer(self) -> bool:
        return self._lb is None

    def __repr__(self) -> str:
        target = endpoint2str(self._server_address) if self._lb is None else (self._lb.Describe() if self._lb else "?")
        return f"<Channel {target} {self._options!r}>"

    def CallMethod(self, method, controller, request, response_class, done=None):
        """Start one RPC; see the module docstring. brpc: Channel::CallMethod"""
        if self._options is None:
            raise RuntimeError("Channel.CallMethod before a successful Channel.Init")
        if not isinstance(controller, Controller):
            raise TypeError(f"controller must be a brpc_mini.rpc.Controller, got {type(controller).__name__}")
        if done is not None and not callable(done):
            raise TypeError("done must be None or callable(response)")
        rt = current_runtime()
        start_send_real_us = rt.gettimeofday_us()
        cntl = controller
        cntl._runtime = rt
        cntl.OnRPCBegin(start_send_real_us)
        if cntl._max_retry == UNSET_MAGIC_NUM:
            cntl._max_retry = self._options.max_retry
        if cntl._max_retry < 0:
            cntl._max_retry = 0
        cntl._request_protocol = PROTOCOL_BAIDU_STD
        cntl._preferred_index = self._preferred_index
        cntl._retry_policy = self._options.retry_policy
        response = response_class() if response_class is not None else None
        correlation_id = cntl.call_id()
        rc = bthread_id_lock_and_reset_range(correlation_id, 2 + cntl._max_retry)
        if rc != 0:
            if not cntl.FailedInline():
                cntl.SetFailed(_errno.EINVAL, "Fail to lock call_id=%d", correlation_id)
            if cntl.is_used_by_rpc():
                log.error("Controller was used by another RPC before. Did you forget to Reset() it before reuse?")
            if done is not None:
                done(response)
                return None
            return response
        cntl._flags |= FLAGS_USED_BY_RPC
        if cntl._timeout_ms == UNSET_MAGIC_NUM:
            cntl._timeout_ms = self._options.timeout_ms
        cntl._connect_timeout_ms = self._options.connect_timeout_ms
        if cntl._backup_request_ms == UNSET_MAGIC_NUM:
            cntl._backup_request_ms = self._options.backup_request_ms
        if cntl._connection_type == CONNECTION_TYPE_UNKNOWN:
            cntl._connection_type = self._connection_type
        cntl._response = response
        cntl._done = done
        cntl._method = method
        if self.SingleServer():
            cntl._single_server_id = self._server_id
            cntl._remote_side = self._server_address
        cntl._lb = self._lb
        result = SerializeRpcRequest(request)
        if result.error_code:
            cntl.SetFailed(EREQUEST, "%s", result.error_text)
            cntl.HandleSendFailed()
            return None if done is not None else response
        cntl._request_buf = result.body
        if cntl._backup_request_ms >= 0 and (cntl._backup_request_ms < cntl._timeout_ms or cntl._timeout_ms < 0):
            cntl._deadline_us = -1 if cntl._timeout_ms < 0 else cntl._timeout_ms * 1000 + start_send_real_us
            cntl._timeout_id = bthread_timer_add(HandleBackupRequest,
                                                 cntl._backup_request_ms * 1000 + start_send_real_us,
                                                 correlation_id)
            if not cntl._timeout_id:
                cntl.SetFailed(_errno.ESRCH, "Fail to add timer for backup request")
                cntl.HandleSendFailed()
                return None if done is not None else response
        elif cntl._timeout_ms >= 0:
            cntl._deadline_us = cntl._timeout_ms * 1000 + start_send_real_us
            cntl._timeout_id = bthread_timer_add(HandleTimeout, cntl._deadline_us, correlation_id)
            if not cntl._timeout_id:
                cntl.SetFailed(_errno.ESRCH, "Fail to add timer for timeout")
                cntl.HandleSendFailed()
                return None if done is not None else response
        else:
            cntl._deadline_us = -1
        # the "CallMethod" checkpoint: the Id is locked, and the options, the request and the timer
        # are already in the Controller; next is IssueRPC
        if rt.observed:
            rt.checkpoint("CallMethod", f"call_id=0x{correlation_id:x} locked, range={2 + cntl._max_retry}, "
                                        f"{'timer armed' if cntl._timeout_id else 'no timer'}")
        cntl.IssueRPC(start_send_real_us)
        if done is None:
            if rt.observed:
                rt.checkpoint("Join", f"call_id=0x{correlation_id:x}")
            Join(correlation_id)
            cntl.OnRPCEnd(rt.gettimeofday_us())
            return response
        return None
