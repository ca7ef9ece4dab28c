"""How fast brpc_mini's client is, and where the time of one RPC goes — for notebooks and readers.

Three functions, each starting and stopping everything it uses (its own threads-mode runtime, its
channel and socket, its workers and TimerThread):

``run_echo_load(address, senders, duration_s)``
    brpc's ``example/multi_threaded_echo_c++`` client for a fixed time: ``senders`` bthreads in a
    loop of synchronous Echo calls on one Channel (one connection), exactly the sender loop of
    :mod:`brpc_mini.multi_threaded_echo_client`. Returns a :class:`LoadResult` (QPS, latencies,
    percentiles); an optional ``progress(elapsed_s, calls)`` callback can drive a progress bar.

``rpc_timeline(address, calls)``
    one synchronous call's wall time along the seed's steps (send, write, sendmsg, join, wait,
    dispatch, cut, process, end, wake): the medians of :data:`TIMELINE_STAGES`, the kernel and the
    server included.

``layer_breakdown(address, calls)``
    ``calls`` echo calls from one bthread under cProfile, every thread that works for the client
    profiled (the worker, the TimerThread), the profile's own time (tottime) summed by *layer* — the module
    file a function lives in, which names the brpc file it mirrors (:data:`LAYERS`). The shares are
    scaled by the CPU time per call measured without the profiler, so the microseconds do not
    include cProfile's own overhead.

    >>> layer_of_file("/site-packages/brpc_mini/bthread/butex.py")
    'Butex & Id'
    >>> layer_of_builtin("<method 'poll' of 'select.epoll' objects>")
    'syscalls (socket send/recv, epoll, select)'

brpc: example/multi_threaded_echo_c++/client.cpp (the load); brpc measures itself with bvar and
pprof (src/brpc/builtin/pprof_service.cpp) — here it is cProfile.

Explained in: notebooks/09_performance.ipynb
"""
from __future__ import annotations

import cProfile
import os
import pstats
import re
import statistics
import threading
import time
import types
from dataclasses import dataclass, field

from .bthread import (Runtime, bthread_join, bthread_start_background, bthread_timer_add, butex_create,
                      butex_wait, butex_wake, gettimeofday_us)
from .multi_threaded_echo_client import EchoService_Stub, LatencyRecorder, describe, percentile, sender
from .proto import echo_pb2
from .rpc import Channel, ChannelOptions, Controller

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------------------------
# the load

@dataclass
class LoadResult:
    """What one load run measured. ``latencies_us`` is sorted (``Controller.latency_us()`` of every
    call that succeeded), ``seconds`` the wall time from the first sender's start to the last one's
    end, so ``qps = calls / seconds``."""
    senders: int
    calls: int
    errors: int
    seconds: float
    latencies_us: list = field(repr=False)

    @property
    def qps(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, fraction: float) -> int:
        """Latency (µs) at ``fraction`` (0..1) of the calls, nearest rank."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        return percentile(self.latencies_us, fraction)

    @property
    def p50(self) -> int:
        return self.percentile(0.5)

    @property
    def p99(self) -> int:
        return self.percentile(0.99)

    @property
    def p999(self) -> int:
        return self.percentile(0.999)

    def describe(self) -> str:
        """One line, as ``multi_threaded_echo_client`` prints it."""
        return (f"{self.senders} sender{'s' if self.senders != 1 else ''}: {self.calls} calls, "
                f"{self.errors} errors in {self.seconds:.2f}s, {describe(self.latencies_us, self.seconds)}")


def _check_address(address) -> None:
    if not isinstance(address, str) or not re.fullmatch(r"[^:\s]+:\d{1,5}", address) \
            or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise ValueError(f"address must be 'ip:port' with a port in 1..65535, got {address!r}")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _open_channel(address: str, timeout_ms: int) -> Channel:
    """A Channel on the current runtime, connected and checked with one Echo from main."""
    channel = Channel()
    if channel.Init(address, ChannelOptions(timeout_ms=timeout_ms, max_retry=3)) != 0:
        raise ValueError(f"address {address!r}: Channel.Init refused it (not ip:port?)")
    cntl = Controller()
    EchoService_Stub(channel).Echo(cntl, echo_pb2.EchoRequest(message="warm-up"))
    if cntl.Failed():
        raise ConnectionError(f"no echo server answered at {address}: {cntl.ErrorText()}")
    return channel


def run_echo_load(address: str, senders: int, duration_s: float = 1.0, *, progress=None,
                  progress_interval_s: float = 0.1, concurrency: int = 2, request_size: int = 16,
                  timeout_ms: int = 1000) -> LoadResult:
    """``senders`` bthreads send synchronous Echo calls to ``address`` on one Channel for
    ``duration_s`` seconds; returns a :class:`LoadResult`.

    A threads-mode ``Runtime(concurrency)`` of its own is made and closed (with it the channel's
    socket, the dispatcher, the workers and the TimerThread); one warm-up call connects first, and
    raises ``ConnectionError`` if nobody answers. ``progress(elapsed_s, calls)`` is called from
    this thread about every ``progress_interval_s`` and once at the end with ``elapsed_s ==
    duration_s``. The senders are :func:`brpc_mini.multi_threaded_echo_client.sender`, as with
    ``--use_bthread``; a failed call is counted in ``errors`` and its sender pauses 50 ms.
    """
    _check_address(address)
    _check_positive_int("senders", senders)
    _check_positive_int("concurrency", concurrency)
    _check_positive_int("request_size", request_size)
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not duration_s > 0:
        raise ValueError(f"duration_s must be a number of seconds > 0, got {duration_s!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, got {type(progress).__name__}")
    args = types.SimpleNamespace(request_size=request_size, attachment_size=0, dont_fail=False)
    recorder = LatencyRecorder()
    stop = threading.Event()
    state = {"tids": []}

    def start_senders():
        # A bthread connects and starts the senders, as the seed's main starts its senders.
        try:
            channel = _open_channel(address, timeout_ms)
        except (ValueError, ConnectionError) as exc:
            state["error"] = exc
            return
        state["started"] = time.monotonic()
        state["tids"] = [bthread_start_background(sender, channel, args, recorder, stop) for _ in range(senders)]

    with Runtime(concurrency=concurrency, mode="threads"):
        try:
            bthread_join(bthread_start_background(start_senders))
            if "error" in state:
                raise state["error"]
            started = state["started"]
            ncalls = 0
            while True:
                elapsed = time.monotonic() - started
                if elapsed >= duration_s:
                    break
                stop.wait(min(progress_interval_s, duration_s - elapsed))
                ncalls += len(recorder.take_window())
                if progress is not None:
                    progress(min(time.monotonic() - started, duration_s), ncalls)
        finally:
            stop.set()
            for tid in state["tids"]:
                bthread_join(tid)
        seconds = time.monotonic() - started
    recorder.take_window()
    latencies = sorted(recorder.total)
    if progress is not None:
        progress(duration_s, len(latencies))
    return LoadResult(senders, len(latencies), recorder.errors, seconds, latencies)


# ---------------------------------------------------------------------------------------------
# the layers

@dataclass(frozen=True)
class Layer:
    """A layer of the client: the brpc files it mirrors and the brpc_mini files that make it."""
    name: str
    brpc: str
    files: tuple = ()          # paths relative to brpc_mini/ ("rpc/socket.py"), or a folder ("proto/")
    builtins: tuple = ()       # C functions, by their owner: "select.epoll", "_socket.socket", "posix."


LAYERS = [
    Layer("bthread scheduling", "src/bthread/task_group.cpp, task_control.cpp, parking_lot.h",
          ("bthread/task_group.py", "bthread/task_control.py", "bthread/parking_lot.py", "bthread/task_meta.py",
           "bthread/remote_task_queue.py", "bthread/work_stealing_queue.py", "bthread/bthread.py",
           "bthread/runtime.py", "bthread/context.py", "bthread/trace.py", "bthread/errno.py"),
          ("greenlet.",)),
    Layer("Butex & Id", "src/bthread/butex.cpp, id.cpp", ("bthread/butex.py", "bthread/id.py")),
    Layer("TimerThread", "src/bthread/timer_thread.cpp", ("bthread/timer_thread.py",)),
    Layer("Channel.CallMethod & Controller", "src/brpc/channel.cpp, controller.cpp",
          ("rpc/channel.py", "rpc/controller.py", "rpc/stub.py", "rpc/retry_policy.py", "rpc/load_balancer.py",
           "rpc/errors.py", "rpc/flags.py", "rpc/__init__.py")),
    Layer("baidu_std pack/parse", "src/brpc/policy/baidu_rpc_protocol.cpp", ("rpc/policy/",)),
    Layer("IOBuf", "src/butil/iobuf.cpp", ("rpc/iobuf.py",)),
    Layer("Socket.Write / KeepWrite", "src/brpc/socket.cpp", ("rpc/socket.py",)),
    Layer("EventDispatcher", "src/brpc/event_dispatcher.cpp", ("rpc/event_dispatcher.py",)),
    Layer("InputMessenger (cut)", "src/brpc/input_messenger.cpp", ("rpc/input_messenger.py",)),
    Layer("protobuf", "(libprotobuf)", ("proto/", "google/protobuf/"), ("google.", "upb")),
    Layer("syscalls (socket send/recv, epoll, select)", "(the kernel)", (),
          ("_socket.socket", "select.", "posix.")),
    Layer("locks & conditions", "(pthread mutexes, futexes)", ("<stdlib>/threading.py",),
          ("_thread.",)),
    Layer("other", "-"),
]
LAYER_NAMES = [layer.name for layer in LAYERS]
OTHER = "other"

# C functions of protobuf whose label names no module ("<built-in method FromString>")
_PROTOBUF_BUILTINS = ("FromString", "SerializeToString", "ParseFromString", "MergeFromString", "ByteSize")
_STDLIB_DIR = os.path.dirname(os.__file__)


def _package_relative(path: str):
    """``bthread/butex.py`` for a file of this package, or of another copy of it; else None."""
    if path.startswith(PACKAGE_DIR + os.sep):
        return os.path.relpath(path, PACKAGE_DIR).replace(os.sep, "/")
    parts = path.replace(os.sep, "/").rsplit("/brpc_mini/", 1)
    return parts[1] if len(parts) == 2 else None


def layer_of_file(filename: str) -> str:
    """The layer of a Python file (a path as ``code.co_filename`` gives it), ``"other"`` if none."""
    path = os.path.abspath(filename)
    rel = _package_relative(path)
    if rel is None and path.startswith(_STDLIB_DIR + os.sep) and os.sep + "site-packages" + os.sep not in path:
        rel = "<stdlib>/" + os.path.relpath(path, _STDLIB_DIR).replace(os.sep, "/")
    elif rel is None:
        rel = path.replace(os.sep, "/")
    for layer in LAYERS:
        for f in layer.files:
            if rel == f or (f.endswith("/") and (rel.startswith(f) or f"/{f}" in rel)):
                return layer.name
    return OTHER


def layer_of_builtin(label: str):
    """The layer of a C function from its cProfile label (``"<method 'poll' of 'select.epoll'
    objects>"``, ``"<built-in method posix.read>"``), or None when it belongs to its caller's."""
    owner = re.match(r"<method '[^']*' of '([^']*)' objects>", label)
    if owner:
        owner = owner.group(1) + "."
    else:
        m = re.match(r"<built-in method ([\w.]+)>", label)
        owner = m.group(1) if m else label
    for layer in LAYERS:
        if any(owner.startswith(b) for b in layer.builtins):
            return layer.name
    if any(name in label for name in _PROTOBUF_BUILTINS):
        return "protobuf"
    return None


def _short(func) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    rel = _package_relative(os.path.abspath(filename))
    return f"{rel if rel is not None else os.path.basename(filename)}:{name}"


def own_time_by_layer(stats: pstats.Stats) -> dict:
    """``{layer: {function label: own seconds}}`` from a profile.

    A Python function goes to its file's layer. A C function goes to its own layer when it has one
    (a syscall, a greenlet switch, protobuf, a lock), otherwise — ``len``, ``dict.get``... — its own
    time is split between its callers' layers by what each caller spent in it (pstats keeps that
    per caller). Code without a file (``<string>``, a dataclass's ``__init__``) counts as a C
    function."""
    raw = stats.stats
    cache = {}

    def layer_of(func):
        if func in cache:
            return cache[func]
        filename, _, name = func
        if filename == "~":
            layer = layer_of_builtin(name)
        elif filename.startswith("<"):
            layer = None
        else:
            layer = layer_of_file(filename)
        cache[func] = layer
        return layer

    out = {name: {} for name in LAYER_NAMES}

    def add(layer, label, seconds):
        out[layer][label] = out[layer].get(label, 0.0) + seconds

    for func, (_cc, _nc, tt, _ct, callers) in raw.items():
        if tt <= 0:
            continue
        layer = layer_of(func)
        if layer is not None:
            add(layer, _short(func), tt)
            continue
        # belongs to its callers: split by what each caller spent in it
        shares = {}
        for caller, value in callers.items():
            caller_tt = value[2] if isinstance(value, tuple) else 0.0
            caller_layer = layer_of(caller)
            if caller_layer is None:       # a C function called by a C function: look one up
                caller_layer = next((layer_of(c) for c in raw.get(caller, (0, 0, 0, 0, {}))[4]
                                     if layer_of(c) is not None), OTHER)
            shares[caller_layer] = shares.get(caller_layer, 0.0) + caller_tt
        total = sum(shares.values())
        if total <= 0:
            add(OTHER, _short(func), tt)
            continue
        for caller_layer, part in shares.items():
            add(caller_layer, _short(func), tt * part / total)
    return out


def merge_profiles(profiles) -> pstats.Stats | None:
    """One ``pstats.Stats`` from several ``cProfile.Profile`` (one per thread; each must be
    disabled by its own thread first); profiles that never saw an event are skipped."""
    merged = None
    for prof in profiles:
        try:
            if merged is None:
                merged = pstats.Stats(prof)
            else:
                merged.add(prof)
        except TypeError:   # "Cannot create or construct a ... object from ...": an empty profile
            continue
    return merged


# ---------------------------------------------------------------------------------------------
# the breakdown

@dataclass
class LayerRow:
    layer: str
    brpc: str
    share: float             # of the client's profiled CPU time, 0..1
    us_per_call: float       # share x CPU µs per call measured without the profiler
    top: list                # [(function, µs per call)], largest first


@dataclass
class Breakdown:
    """The result of :func:`layer_breakdown`. ``rows`` follow :data:`LAYERS`' order."""
    calls: int
    cpu_us_per_call: float            # the client process's CPU per call, without the profiler
    wall_us_per_call: float           # wall time per call, without the profiler
    profiled_cpu_us_per_call: float   # the same calls under the profiler (its overhead included)
    rows: list
    stats: pstats.Stats = field(repr=False)

    def row(self, layer: str) -> LayerRow:
        return next(r for r in self.rows if r.layer == layer)

    def table(self, top: int = 2) -> str:
        width = max(len(r.layer) for r in self.rows)
        lines = [f"{'layer':<{width}}  {'share':>6}  {'µs/call':>7}  top functions (µs/call)"]
        for r in sorted(self.rows, key=lambda r: -r.share):
            tops = ", ".join(f"{name} {us:.1f}" for name, us in r.top[:top])
            lines.append(f"{r.layer:<{width}}  {r.share:>6.1%}  {r.us_per_call:>7.1f}  {tops}")
        lines.append(f"{'total':<{width}}  {sum(r.share for r in self.rows):>6.1%}  "
                     f"{self.cpu_us_per_call:>7.1f}  (CPU per call without the profiler; "
                     f"{self.profiled_cpu_us_per_call:.0f} with it)")
        return "\n".join(lines)

    __str__ = table


def _on_timer_thread(fn) -> None:
    """Run ``fn()`` on the current runtime's TimerThread; wait (on a Butex) until it has run."""
    ran = butex_create(0, owner="perf")

    def callback(_arg):
        try:
            fn()
        finally:
            ran.value = 1
            butex_wake(ran)
    if not bthread_timer_add(callback, gettimeofday_us()):
        raise RuntimeError("the TimerThread refused a task")
    while ran.value == 0:
        butex_wait(ran, 0)


def layer_breakdown(address: str, calls: int = 2000, *, top: int = 3, request_size: int = 16,
                    timeout_ms: int = 1000) -> Breakdown:
    """Where the client's CPU goes in ``calls`` synchronous Echo calls to ``address``, by layer.

    One bthread makes the calls on a threads-mode ``Runtime(concurrency=1)`` of its own, so the
    sender, the EventDispatcher and the response bthreads all run on one worker, and no GIL passes
    between workers. The worker's cProfile is enabled and disabled by the sender itself, the
    TimerThread's by a timer task: every thread that works for the client is profiled (main only
    waits in ``bthread_join``), over exactly the measured calls, and the two profiles are merged.
    Each profile's clock is its own thread's CPU time (``time.thread_time_ns``), so time spent
    blocked (``epoll_wait``, a Condition) counts for nothing, as CPU should.

    The calls are made three times: a warm-up, once without the profiler (CPU time of the whole
    process, ``time.process_time``, and wall time) and once under it. The profile gives the shares;
    the un-profiled CPU per call turns them into microseconds.

    The whole measurement runs inside that one bthread: a cProfile profiler only sees the thread
    that enables it, so the worker must enable its own.
    """
    _check_address(address)
    _check_positive_int("calls", calls)
    _check_positive_int("top", top)
    _check_positive_int("request_size", request_size)
    request = echo_pb2.EchoRequest(message="r" * request_size)

    def new_profile():
        return cProfile.Profile(time.thread_time_ns, 1e-9)
    worker, timer = new_profile(), new_profile()
    out = {}

    def measure():
        channel = _open_channel(address, timeout_ms)
        stub = EchoService_Stub(channel)

        def loop(n):
            failed = 0
            first_error = ""
            for _ in range(n):
                cntl = Controller()
                stub.Echo(cntl, request)
                if cntl.Failed():
                    failed += 1
                    first_error = first_error or cntl.ErrorText()
            if failed:
                raise ConnectionError(f"{failed} of {n} echo calls to {address} failed: {first_error}")

        loop(max(20, calls // 10))                      # warm-up
        wall0, cpu0 = time.perf_counter(), time.process_time()
        loop(calls)
        out["wall"], out["cpu"] = time.perf_counter() - wall0, time.process_time() - cpu0
        _on_timer_thread(timer.enable)
        cpu1 = time.process_time()
        worker.enable()
        try:
            loop(calls)
        finally:
            worker.disable()
            out["profiled_cpu"] = time.process_time() - cpu1
            _on_timer_thread(timer.disable)

    def guarded():
        try:
            measure()
        except BaseException as exc:     # re-raised in the caller's thread below
            out["error"] = exc

    with Runtime(concurrency=1, mode="threads"):
        bthread_join(bthread_start_background(guarded))
    if "error" in out:
        raise out["error"]
    stats = merge_profiles([worker, timer])
    by_layer = own_time_by_layer(stats)
    total = sum(sum(funcs.values()) for funcs in by_layer.values())
    if total <= 0:
        raise RuntimeError("the profile recorded no time")
    cpu_us = out["cpu"] * 1e6 / calls
    rows = []
    for layer in LAYERS:
        funcs = by_layer[layer.name]
        share = sum(funcs.values()) / total
        best = sorted(funcs.items(), key=lambda kv: -kv[1])[:top]
        rows.append(LayerRow(layer.name, layer.brpc, share, share * cpu_us,
                             [(name, seconds / total * cpu_us) for name, seconds in best]))
    return Breakdown(calls, cpu_us, out["wall"] * 1e6 / calls, out["profiled_cpu"] * 1e6 / calls, rows, stats)


# ---------------------------------------------------------------------------------------------
# the timeline of one RPC, on the wall clock

#: The stages of one synchronous RPC in the order they happen, on the path where the response
#: arrives after the sender went to sleep (epoll_wait wakes the dispatcher): key, what happens
#: (with brpc's names), the brpc files, and whether brpc_mini's Python does the work ("python") or
#: the kernel and the server do ("kernel & server").
TIMELINE_STAGES = [
    ("send", "Controller, Channel::CallMethod (Id, timer), IssueRPC, PackRpcRequest",
     "channel.cpp, controller.cpp, baidu_rpc_protocol.cpp", "python"),
    ("write", "Socket::Write up to the syscall: the WriteRequest, StartWrite takes the write right",
     "socket.cpp", "python"),
    ("sendmsg", "sendmsg gives the frame to the kernel (on loopback the kernel also delivers it to "
                "the server and wakes it)", "socket.cpp, iobuf.cpp", "kernel & server"),
    ("join", "IsWriteComplete, bthread_id_unlock, then Join: the sender sleeps on the Id's join_butex",
     "socket.cpp, id.cpp", "python"),
    ("wait", "the server answers; epoll_wait returns in EventDispatcher::Run", "event_dispatcher.cpp",
     "kernel & server"),
    ("dispatch", "StartInputEvent (OnInputEvent in current brpc) starts the reader bthread "
                 "(bthread_start_urgent)", "socket.cpp, tcp_transport.cpp, task_group.cpp", "python"),
    ("cut", "InputMessenger::OnNewMessages: read, cut the frame (ParseRpcMessage), read again "
            "(EAGAIN), MoreReadEvents gives the socket back",
     "input_messenger.cpp", "python"),
    ("process", "ProcessRpcResponse: RpcMeta, bthread_id_lock, parse the response, "
                "OnVersionedRPCReturned", "baidu_rpc_protocol.cpp, controller.cpp", "python"),
    ("end", "EndRPC: delete the timer, Call::OnComplete", "controller.cpp", "python"),
    ("wake", "bthread_id_unlock_and_destroy wakes the sender, which returns from Join",
     "id.cpp, butex.cpp", "python"),
]
TIMELINE_KEYS = [stage[0] for stage in TIMELINE_STAGES]


@dataclass
class TimelineStage:
    key: str
    what: str
    brpc: str
    kind: str                # "python" or "kernel & server"
    median_us: float
    mean_us: float


@dataclass
class Timeline:
    """The result of :func:`rpc_timeline`."""
    calls: int               # calls measured
    samples: int             # of them, calls that took the epoll path (the ones timed by stage)
    wall_us_per_call: float  # all measured calls, marks included
    stages: list

    def stage(self, key: str) -> TimelineStage:
        return next(st for st in self.stages if st.key == key)

    def total_us(self, kind: str | None = None) -> float:
        return sum(st.median_us for st in self.stages if kind is None or st.kind == kind)

    def table(self) -> str:
        lines = [f"{'stage':<9} {'median µs':>9}  {'who':<15}  what happens (brpc)"]
        for st in self.stages:
            lines.append(f"{st.key:<9} {st.median_us:>9.1f}  {st.kind:<15}  {st.what}")
        lines.append(f"{'total':<9} {self.total_us():>9.1f}  python {self.total_us('python'):.0f} µs, "
                     f"kernel & server {self.total_us('kernel & server'):.0f} µs; "
                     f"{self.samples} of {self.calls} calls took this path")
        return "\n".join(lines)

    __str__ = table


class _Marks:
    """Wraps the functions that begin the stages so that each records ``perf_counter_ns`` when it
    starts (and the ``sendmsg`` inside ``Socket.Write`` when it ends too); undone on exit. While it is active, every
    runtime of the process pays the wrappers (about a microsecond per call in all)."""

    def __init__(self):
        self.marks = {}
        self._undo = []

    def _wrap(self, owner, name, key, after=None):
        original = owner.__dict__[name]
        marks, now = self.marks, time.perf_counter_ns

        def wrapper(*args, **kwargs):
            marks[key] = now()
            result = original(*args, **kwargs)
            if after:
                marks[after] = now()
            return result
        wrapper.__wrapped__ = original
        setattr(owner, name, wrapper)
        self._undo.append((owner, name, original))

    def __enter__(self):
        from .rpc import channel, controller, event_dispatcher, input_messenger, iobuf, socket
        marks, now = self.marks, time.perf_counter_ns
        original_wait = event_dispatcher.EventDispatcher.__dict__["_wait_events"]

        def _wait_events(dispatcher):
            events = original_wait(dispatcher)
            marks["wait_end"] = now()
            return events
        event_dispatcher.EventDispatcher._wait_events = _wait_events
        self._undo.append((event_dispatcher.EventDispatcher, "_wait_events", original_wait))
        self._wrap(socket.Socket, "Write", "send_end")
        self._wrap(iobuf.IOBuf, "write_to", "sendmsg_start", "sendmsg_end")
        self._wrap(channel, "Join", "join_end")
        self._wrap(input_messenger.InputMessenger, "OnNewMessages", "dispatch_end")
        self._wrap(input_messenger, "ProcessInputMessage", "cut_end")
        self._wrap(controller.Controller, "EndRPC", "process_end")
        self._wrap(controller, "bthread_id_unlock_and_destroy", "end_end")
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()
        return False


def rpc_timeline(address: str, calls: int = 2000, *, request_size: int = 16, timeout_ms: int = 1000) -> Timeline:
    """Where the wall time of one synchronous RPC goes, stage by stage (:data:`TIMELINE_STAGES`).

    One bthread makes ``calls`` Echo calls on a threads-mode ``Runtime(concurrency=1)`` of its own,
    after a warm-up; the functions that begin each stage record the time they start. A stage's
    figure is its median over the calls whose response arrived after the sender had gone to sleep
    (the dispatcher's epoll_wait woke up for it) — nearly every call with one sender. Unlike
    :func:`layer_breakdown`, which shares out the client's CPU, this shows the critical path of one
    call, the kernel and the server included. It patches brpc_mini's functions for its duration:
    run it alone.
    """
    _check_address(address)
    _check_positive_int("calls", calls)
    _check_positive_int("request_size", request_size)
    request = echo_pb2.EchoRequest(message="r" * request_size)
    order = ["start", "send_end", "sendmsg_start", "sendmsg_end", "join_end", "wait_end", "dispatch_end",
             "cut_end", "process_end", "end_end", "stop"]
    durations = {key: [] for key in TIMELINE_KEYS}
    out = {}
    with _Marks() as recorder:
        marks = recorder.marks

        def measure():
            channel = _open_channel(address, timeout_ms)
            stub = EchoService_Stub(channel)
            now = time.perf_counter_ns
            for i in range(max(20, calls // 10) + calls):
                if i == max(20, calls // 10):
                    out["t0"] = now()
                marks.clear()
                marks["start"] = now()
                cntl = Controller()
                stub.Echo(cntl, request)
                marks["stop"] = now()
                if cntl.Failed():
                    raise ConnectionError(f"an echo call to {address} failed: {cntl.ErrorText()}")
                if "t0" not in out:
                    continue
                times = [marks.get(key) for key in order]
                if None in times or any(b < a for a, b in zip(times, times[1:])):
                    continue        # a response read before the sender slept: no epoll stage
                for key, a, b in zip(TIMELINE_KEYS, times, times[1:]):
                    durations[key].append((b - a) / 1000)
            out["t1"] = now()

        def guarded():
            try:
                measure()
            except BaseException as exc:
                out["error"] = exc

        with Runtime(concurrency=1, mode="threads"):
            bthread_join(bthread_start_background(guarded))
    if "error" in out:
        raise out["error"]
    samples = len(durations["send"])
    if not samples:
        raise RuntimeError("no call took the epoll path; the timeline has nothing to show")
    stages = [TimelineStage(key, what, brpc, kind, statistics.median(durations[key]),
                            statistics.fmean(durations[key]))
              for key, what, brpc, kind in TIMELINE_STAGES]
    return Timeline(calls, samples, (out["t1"] - out["t0"]) / 1000 / calls, stages)
