"""Controller: everything one RPC knows — its correlation id, its tries, its errors.

brpc: src/brpc/controller.h, src/brpc/controller.cpp, src/brpc/retry_policy.cpp

One RPC, from the client's side:

* ``call_id()`` creates (lazily) the RPC's bthread Id, with this Controller as data and
  ``HandleSocketFailed`` as its ``on_error2``. ``Channel.CallMethod`` locks it with
  ``bthread_id_lock_and_reset_range(call_id, 2 + max_retry)``: version ``call_id`` stands for the
  whole RPC (timeout, cancel, join), ``call_id + 1`` is the first try, ``call_id + n + 1`` retry n
  — ``current_id()``.
* ``IssueRPC`` picks the server and the connection, packs the request with ``current_id()`` as
  the correlation id, writes it, and unlocks the Id.
* Whoever finishes a try — the response bthread (``ProcessRpcResponse``), the TimerThread, a
  failing socket — locks the Id and calls ``OnVersionedRPCReturned``: a stale try is ignored, a
  retryable error issues the next try, anything else ends the RPC in ``EndRPC``, whose
  ``bthread_id_unlock_and_destroy`` wakes the caller in ``Join``.

The server side uses the same class for its per-request state (``ErrorCode``/``SetFailed``,
attachments, ``remote_side``), as brpc does.

Explained in: notebooks/04_channel_callmethod.ipynb, notebooks/05_issue_rpc.ipynb,
notebooks/06_response_path.ipynb
"""
from __future__ import annotations

import errno as _errno
import logging

from ..bthread import (bthread_about_to_quit, bthread_id_about_to_destroy, bthread_id_create2,
                       bthread_id_unlock, bthread_id_unlock_and_destroy, bthread_start_background,
                       bthread_timer_del, BthreadAttr)
from ..bthread.context import current_runtime
from .errors import (EBACKUPREQUEST, ECANCELED, EFAILEDSOCKET, EHOSTDOWN, EINTERNAL, ELOGOFF,
                     ERPCTIMEDOUT, berror)
from .iobuf import IOBuf
from .policy.baidu_rpc_protocol import PackRpcRequest
from .retry_policy import DefaultRetryPolicy
from .socket import INVALID_SOCKET_ID, Socket, endpoint2str

log = logging.getLogger("brpc_mini.rpc")

#: brpc: src/brpc/controller.h, UNSET_MAGIC_NUM
UNSET_MAGIC_NUM = -123456789
#: brpc: src/brpc/controller.cpp, MAX_RETRY_COUNT
MAX_RETRY_COUNT = 1000

#: brpc: src/brpc/options.proto, ConnectionType
CONNECTION_TYPE_UNKNOWN = 0
CONNECTION_TYPE_SINGLE = 1
CONNECTION_TYPE_POOLED = 2
CONNECTION_TYPE_SHORT = 4
CONNECTION_TYPE_NAMES = {CONNECTION_TYPE_SINGLE: "single", CONNECTION_TYPE_POOLED: "pooled",
                         CONNECTION_TYPE_SHORT: "short", CONNECTION_TYPE_UNKNOWN: "unknown"}


def StringToConnectionType(name) -> int:
    """``"single"`` -> 1 ... ; "" -> UNKNOWN. brpc: src/brpc/adaptive_connection_type.cpp"""
    if isinstance(name, int):
        if name not in CONNECTION_TYPE_NAMES:
            raise ValueError(f"unknown connection_type {name!r}")
        return name
    table = {v: k for k, v in CONNECTION_TYPE_NAMES.items()}
    table[""] = CONNECTION_TYPE_UNKNOWN
    if name not in table:
        raise ValueError(f"connection_type must be one of 'single', 'pooled', 'short' (or ''), got {name!r}")
    return table[name]


#: Controller flags (brpc: src/brpc/controller.h)
FLAGS_BACKUP_REQUEST = 1 << 1
#: the request was counted in its server's concurrency; SendRpcResponse uncounts it
FLAGS_ADDED_CONCURRENCY = 1 << 2
FLAGS_USED_BY_RPC = 1 << 3
FLAGS_ENDING_RPC = 1 << 14
FLAGS_DESTROY_CID_IN_DONE = 1 << 5


class CompletionInfo:
    """Which try ended, and whether a response arrived. brpc: Controller::CompletionInfo"""
    __slots__ = ("id", "responded")

    def __init__(self, id_value: int, responded: bool):
        self.id = id_value
        self.responded = responded


_RUN_END_RPC_ATTR = BthreadAttr(name="RunEndRPC")


class Call:
    """One try of an RPC. brpc: src/brpc/controller.h, Controller::Call"""
    __slots__ = ("nretry", "need_feedback", "peer_id", "begin_time_us", "sending_sock", "sending_sock_id")

    def __init__(self, other: "Call | None" = None):
        if other is None:
            self.nretry = 0
            self.need_feedback = False
            self.peer_id = INVALID_SOCKET_ID
            self.begin_time_us = 0
            self.sending_sock = None
            self.sending_sock_id = INVALID_SOCKET_ID
        else:  # move: the new Call takes the socket; the old one keeps its retry number
            self.nretry = other.nretry
            self.need_feedback = other.need_feedback
            self.peer_id = other.peer_id
            self.begin_time_us = other.begin_time_us
            self.sending_sock = other.sending_sock
            self.sending_sock_id = other.sending_sock_id
            other.sending_sock = None
            other.sending_sock_id = INVALID_SOCKET_ID
            other.peer_id = INVALID_SOCKET_ID
            other.need_feedback = False

    def OnComplete(self, cntl, error_code: int, responded: bool, end_of_rpc: bool) -> None:
        """Give back or close the try's connection. brpc: Controller::Call::OnComplete"""
        sock = self.sending_sock
        # Socket objects are reused per slot and not reference counted: if this try's connection
        # failed (and was recycled), the object may now be another RPC's connection. Act only if
        # the id this try used still addresses this object (a risk found in review; reproduced in
        # tests/rpc/test_rpc_fault_injection.py: a late OnComplete failed, or pooled, the next
        # connection made in the same slot).
        if sock is not None and Socket.Address(self.sending_sock_id, sock.runtime) is not sock:
            sock = None
        ctype = cntl._connection_type
        if sock is not None:
            if ctype == CONNECTION_TYPE_POOLED:
                if error_code == 0 or responded:
                    sock.ReturnToPool()
                else:
                    sock.SetFailed(error_code, f"the pooled connection of a failed try: {berror(error_code)}")
            elif ctype == CONNECTION_TYPE_SHORT:
                sock.SetFailed(EFAILEDSOCKET, "short connection done")
        if ctype != CONNECTION_TYPE_SINGLE and error_code in (_errno.ECONNREFUSED, _errno.ENETUNREACH,
                                                               _errno.EHOSTUNREACH, _errno.EINVAL):
            main = Socket.Address(self.peer_id)
            if main is not None:
                main.SetFailed(error_code, f"Fail to connect: {berror(error_code)}")
        if error_code == ELOGOFF:
            main = Socket.Address(self.peer_id)
            if main is not None:
                main.SetLogOff()
        self.sending_sock = None
        self.sending_sock_id = INVALID_SOCKET_ID


class Controller:
    """Per-RPC state. Make one per call (or ``Reset()`` it before reusing it)."""

    def __init__(self):
        self._runtime = None
        self._correlation_id = 0
        self.Reset()

    def Reset(self) -> None:
        """Make the Controller ready for another RPC. brpc: Controller::Reset"""
        self._error_code = 0
        self._error_text = ""
        self._correlation_id = 0
        self._flags = 0
        self._max_retry = UNSET_MAGIC_NUM
        self._timeout_ms = UNSET_MAGIC_NUM
        self._backup_request_ms = UNSET_MAGIC_NUM
        self._connect_timeout_ms = UNSET_MAGIC_NUM
        self._real_timeout_ms = UNSET_MAGIC_NUM
        self._deadline_us = -1
        self._timeout_id = 0
        self._begin_time_us = 0
        self._end_time_us = 0
        self._current_call = Call()
        self._unfinished_call = None
        self._single_server_id = INVALID_SOCKET_ID
        self._remote_side = None
        self._local_side = None
        self._lb = None
        self._accessed = set()
        self._connection_type = CONNECTION_TYPE_UNKNOWN
        self._preferred_index = -1
        self._request_protocol = None
        self._method = None
        self._request_buf = b""
        self._response = None
        self._done = None
        self._request_attachment = IOBuf()
        self._response_attachment = IOBuf()
        self._log_id = 0
        self._has_log_id = False
        self._retry_policy = None
        self._tmp_completion_info = None
        self._channel_label = ""
        # server side
        self._server = None
        self._server_side = None
        self._server_socket = None
        self._received_us = 0

    # -- what users read -----------------------------------------------------------------------
    def Failed(self) -> bool:
        return self._error_code != 0

    def FailedInline(self) -> bool:
        return self._error_code != 0

    def ErrorCode(self) -> int:
        return self._error_code

    def ErrorText(self) -> str:
        return self._error_text

    def SetFailed(self, error_code, reason: str = "", *args) -> None:
        """Fail with ``error_code``; the text is *appended*, with ``[R<n>]`` and ``[E<code>]``.

        brpc: src/brpc/controller.cpp, Controller::SetFailed. ``SetFailed("text")`` (no code) is
        brpc's other overload: code -1 and no ``[E<code>]`` in the text; a server sends -1 as
        EINTERNAL (SendRpcResponse).
        """
        if isinstance(error_code, str):
            reason, args, error_code = error_code, (reason,) + args if reason else args, -1
        if not isinstance(error_code, int):
            raise TypeError(f"error_code must be an int, got {type(error_code).__name__}")
        if error_code == 0:
            log.error("SetFailed(0, ...) is a bug; using -1")
            error_code = -1
        text = reason % args if args else reason
        self._error_code = error_code
        if self._error_text:
            self._error_text += " "
        if self._current_call.nretry != 0:
            self._error_text += f"[R{self._current_call.nretry}]"
        elif self._server_side is not None:
            self._error_text += f"[{endpoint2str(self._server_side)}]"
        if error_code != -1:
            self._error_text += f"[E{error_code}]"
        self._error_text += text

    def latency_us(self) -> int:
        if self._end_time_us <= self._begin_time_us:
            return 0
        return self._end_time_us - self._begin_time_us

    def remote_side(self):
        return self._remote_side

    def local_side(self):
        return self._local_side

    def call_id(self) -> int:
        """The RPC's Id, made on first use: data = this Controller, on_error2 = HandleSocketFailed."""
        if self._correlation_id == 0:
            self._correlation_id = bthread_id_create2(self, HandleSocketFailed)
        return self._correlation_id

    def current_id(self) -> int:
        """This try's versioned id: ``call_id + nretry + 1``. brpc: Controller::current_id"""
        return self.call_id() + self._current_call.nretry + 1

    def get_id(self, nretry: int) -> int:
        return self._correlation_id + nretry + 1

    def set_timeout_ms(self, timeout_ms: int) -> None:
        if not isinstance(timeout_ms, int) or timeout_ms > 0x7FFFFFFF:
            raise ValueError(f"timeout_ms must be an int <= 2147483647, got {timeout_ms!r}")
        self._timeout_ms = timeout_ms

    def timeout_ms(self) -> int:
        return self._timeout_ms

    def set_max_retry(self, max_retry: int) -> None:
        if not isinstance(max_retry, int):
            raise TypeError(f"max_retry must be an int, got {type(max_retry).__name__}")
        self._max_retry = min(max_retry, MAX_RETRY_COUNT)

    def max_retry(self) -> int:
        return self._max_retry

    def set_backup_request_ms(self, ms: int) -> None:
        if not isinstance(ms, int):
            raise TypeError(f"backup_request_ms must be an int, got {type(ms).__name__}")
        self._backup_request_ms = ms

    def backup_request_ms(self) -> int:
        return self._backup_request_ms

    def set_log_id(self, log_id: int) -> None:
        if not isinstance(log_id, int):
            raise TypeError(f"log_id must be an int, got {type(log_id).__name__}")
        self._log_id = log_id
        self._has_log_id = True

    def log_id(self) -> int:
        return self._log_id

    def has_log_id(self) -> bool:
        return self._has_log_id

    def set_connection_type(self, connection_type) -> None:
        self._connection_type = StringToConnectionType(connection_type)

    def connection_type(self) -> int:
        return self._connection_type

    def request_attachment(self) -> IOBuf:
        return self._request_attachment

    def response_attachment(self) -> IOBuf:
        return self._response_attachment

    def retried_count(self) -> int:
        return self._current_call.nretry

    def has_backup_request(self) -> bool:
        return bool(self._flags & FLAGS_BACKUP_REQUEST)

    def is_used_by_rpc(self) -> bool:
        return bool(self._flags & FLAGS_USED_BY_RPC)

    def SingleServer(self) -> bool:
        return self._lb is None

    def response(self):
        return self._response

    def __repr__(self) -> str:
        state = f"failed [E{self._error_code}]" if self._error_code else "ok"
        return f"<Controller call_id=0x{self._correlation_id:x} nretry={self._current_call.nretry} {state}>"

    # -- the client path -----------------------------------------------------------------------
    def OnRPCBegin(self, begin_time_us: int) -> None:
        self._begin_time_us = self._end_time_us = begin_time_us

    def OnRPCEnd(self, end_time_us: int) -> None:
        self._end_time_us = end_time_us

    def IssueRPC(self, start_realtime_us: int) -> None:
        """Send the current try: pick server and connection, pack, write, unlock the Id.

        brpc: src/brpc/controller.cpp, Controller::IssueRPC
        """
        rt = self._runtime
        self._current_call.begin_time_us = start_realtime_us
        self._error_code = 0
        cid = self.current_id()
        if rt.observed:
            rt.checkpoint("IssueRPC", f"cid=0x{cid:x} try {self._current_call.nretry}")
        # pick a target server
        if self.SingleServer():
            tmp_sock = Socket.Address(self._single_server_id, rt)
            if tmp_sock is None or not tmp_sock.IsAvailable():
                self.SetFailed(EHOSTDOWN, "Not connected to %s yet, server_id=%d",
                               endpoint2str(self._remote_side), self._single_server_id)
                return self.HandleSendFailed()
            self._current_call.peer_id = self._single_server_id
        else:
            rc, tmp_sock = self._lb.SelectServer(start_realtime_us, self._accessed)
            if rc != 0:
                self.SetFailed(rc, "Fail to select server from %s", self._lb.Describe())
                return self.HandleSendFailed()
            self._current_call.peer_id = tmp_sock.id()
            self._remote_side = tmp_sock.remote_side
        # the connection
        if self._connection_type == CONNECTION_TYPE_SINGLE:
            sending = tmp_sock
        elif self._connection_type == CONNECTION_TYPE_POOLED:
            sending = tmp_sock.GetPooledSocket()
        elif self._connection_type == CONNECTION_TYPE_SHORT:
            sending = tmp_sock.GetShortSocket()
        else:
            self.SetFailed(_errno.EINVAL, "Invalid connection_type=%d", self._connection_type)
            return self.HandleSendFailed()
        sending.preferred_index = self._preferred_index
        if tmp_sock.preferred_index < 0:
            tmp_sock.preferred_index = self._preferred_index
        self._current_call.sending_sock = sending
        self._current_call.sending_sock_id = sending.id()    # see Call.OnComplete
        # make the request
        method = self._method
        attachment = self._request_attachment
        packet = PackRpcRequest(cid, method.containing_service.full_name, method.name, self._request_buf,
                                attachment=attachment.to_bytes() if attachment._size else b"",
                                log_id=self._log_id if self._has_log_id else None)
        abstime = None
        if self._connect_timeout_ms > 0:
            abstime = self._connect_timeout_ms * 1000 + start_realtime_us
            if self._deadline_us >= 0:
                abstime = min(abstime, self._deadline_us)
        if rt.observed:
            rt.checkpoint("Write", f"cid=0x{cid:x} {len(packet)} bytes to {sending.label}")
        sending.Write(packet, id_wait=cid, abstime_us=abstime)
        rc = bthread_id_unlock(cid)
        if rc != 0:
            log.error("bthread_id_unlock(0x%x) in IssueRPC returned %d", cid, rc)

    def HandleSendFailed(self) -> None:
        """End the current try with the error already set. brpc: Controller::HandleSendFailed"""
        if not self.FailedInline():
            self.SetFailed(EINTERNAL, "Must be SetFailed() before calling HandleSendFailed()")
        info = CompletionInfo(self.current_id(), False)
        self.OnVersionedRPCReturned(info, self._done is not None, self._error_code)

    def OnVersionedRPCReturned(self, info: CompletionInfo, new_bthread: bool, saved_error: int) -> None:
        """A try ended (the Id is locked): ignore it, retry, back up, or end the RPC.

        brpc: src/brpc/controller.cpp, Controller::OnVersionedRPCReturned
        """
        rt = self._runtime
        while info.id != self._correlation_id and info.id != self.current_id():
            if self._unfinished_call is not None and self.get_id(self._unfinished_call.nretry) == info.id:
                if not self.FailedInline():
                    break           # the original call of a backup request succeeded: use it
                self._unfinished_call.OnComplete(self, self._error_code, info.responded, False)
                self._unfinished_call = None
            # a stale try: restore the error the RPC had, drop what it brought
            rt._emit("stale", rt._current_meta(), f"cid=0x{info.id:x} ignored (current 0x{self.current_id():x})")
            self._error_code = saved_error
            self._response_attachment.clear()
            bthread_id_unlock(info.id)
            return
        if self._flags & FLAGS_ENDING_RPC:
            self._error_code = saved_error
            bthread_id_unlock(info.id)
            return
        if not ((not self._error_code and self._retry_policy is None)
                or self._current_call.nretry >= self._max_retry):
            if self._error_code == EBACKUPREQUEST:
                if self._timeout_ms >= 0:
                    from ..bthread import bthread_timer_add
                    from .channel import HandleTimeout
                    self._timeout_id = bthread_timer_add(HandleTimeout, self._deadline_us, self._correlation_id)
                    if not self._timeout_id:
                        self.SetFailed(_errno.ESRCH, "Fail to add timer")
                        return self._EndOrSpawn(info, new_bthread)
                if not self.SingleServer():
                    self._accessed.add(self._current_call.peer_id)
                self._unfinished_call = Call(self._current_call)
                self._current_call.nretry += 1
                self._flags |= FLAGS_BACKUP_REQUEST
                rt._emit("backup_request", rt._current_meta(), f"try {self._current_call.nretry}")
                return self.IssueRPC(rt.gettimeofday_us())
            policy = self._retry_policy or DefaultRetryPolicy
            if policy.DoRetry(self):
                if not self.SingleServer():
                    self._accessed.add(self._current_call.peer_id)
                self._current_call.OnComplete(self, self._error_code, info.responded, False)
                self._current_call.nretry += 1
                self._response_attachment.clear()
                rt._emit("retry", rt._current_meta(), f"try {self._current_call.nretry} after [E{self._error_code}]")
                return self.IssueRPC(rt.gettimeofday_us())
        return self._EndOrSpawn(info, new_bthread)

    def _EndOrSpawn(self, info, new_bthread: bool) -> None:
        if self._done is not None and not self._flags & FLAGS_DESTROY_CID_IN_DONE:
            bthread_id_about_to_destroy(info.id)
        if new_bthread:
            self._tmp_completion_info = info
            bthread_start_background(RunEndRPC, self, attr=_RUN_END_RPC_ATTR)
        else:
            self.EndRPC(info)

    def EndRPC(self, info: CompletionInfo) -> None:
        """Finish the calls, run ``done`` (async) and destroy the Id, which wakes ``Join``.

        brpc: src/brpc/controller.cpp, Controller::EndRPC
        """
        rt = self._runtime
        self._flags |= FLAGS_ENDING_RPC
        if self._timeout_id:
            bthread_timer_del(self._timeout_id)
            self._timeout_id = 0
        if info.id == self.current_id() or info.id == self._correlation_id:
            sock = self._current_call.sending_sock
            if sock is not None:
                self._remote_side = sock.remote_side or self._remote_side
                self._local_side = sock.local_side
            if self._unfinished_call is not None:
                self._unfinished_call.OnComplete(self, self._error_code or EBACKUPREQUEST, False, False)
                self._unfinished_call = None
            self._current_call.OnComplete(self, self._error_code, info.responded, True)
        else:
            # the original call of a backup request answered first
            self._current_call.OnComplete(self, ECANCELED, False, False)
            if self._unfinished_call is not None:
                sock = self._unfinished_call.sending_sock
                if sock is not None:
                    self._remote_side = sock.remote_side or self._remote_side
                    self._local_side = sock.local_side
                self._unfinished_call.OnComplete(self, self._error_code, info.responded, True)
                self._unfinished_call = None
        if not self._error_code:
            self._error_text = ""
        self._lb = None
        cid = self._correlation_id
        if rt.observed:
            rt.checkpoint("EndRPC", f"cid=0x{cid:x} {'ok' if not self._error_code else 'E%d' % self._error_code}")
        if self._done is not None:
            self.OnRPCEnd(rt.gettimeofday_us())
            done, response = self._done, self._response
            done(response)
            # the Controller may be gone now; only the id is used
            bthread_about_to_quit()
            bthread_id_unlock_and_destroy(cid)
        else:
            bthread_about_to_quit()
            bthread_id_unlock_and_destroy(cid)


def RunEndRPC(cntl: Controller) -> None:
    """brpc: src/brpc/controller.cpp, Controller::RunEndRPC"""
    cntl.EndRPC(cntl._tmp_completion_info)


def HandleSocketFailed(id_value: int, cntl: Controller, error_code: int, error_text: str) -> int:
    """``on_error2`` of every RPC Id: record the error, then let the RPC decide.

    brpc: src/brpc/controller.cpp, Controller::HandleSocketFailed
    """
    if not cntl.is_used_by_rpc():
        cntl.SetFailed(error_code, "Cancel call_id=%d before CallMethod()", id_value)
        return bthread_id_unlock(id_value)
    saved_error = cntl.ErrorCode()
    remote = endpoint2str(cntl.remote_side())
    if error_code == ERPCTIMEDOUT:
        cntl.SetFailed(error_code, "Reached timeout=%dms @%s", cntl.timeout_ms(), remote)
    elif error_code == EBACKUPREQUEST:
        cntl.SetFailed(error_code, "Reached backup timeout=%dms @%s", cntl.backup_request_ms(), remote)
    elif error_text:
        cntl.SetFailed(error_code, "%s", error_text)
    else:
        cntl.SetFailed(error_code, "%s @%s", berror(error_code), remote)
    info = CompletionInfo(id_value, False)
    if cntl._retry_policy is None:
        cntl.OnVersionedRPCReturned(info, True, saved_error)
        return 0
    # A custom RetryPolicy may block: brpc runs OnVersionedRPCReturned in a new bthread then, never
    # on the TimerThread or in the code failing the socket (found by tests/rpc: it ran inline).
    try:
        bthread_start_background(cntl.OnVersionedRPCReturned, info, True, saved_error,
                                 attr=BthreadAttr(name="OnVersionedRPCReturned"))
    except Exception:       # brpc: if the bthread cannot start, run it here
        cntl.OnVersionedRPCReturned(info, True, saved_error)
    return 0
