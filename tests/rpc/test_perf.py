"""brpc_mini.perf: the echo load and the per-layer breakdown the performance chapter runs.

Against the bundled echo server in a child process (``EchoServerProcess``), as the chapter does.
No timing thresholds (the machine is small and shared): the tests check what must hold however
fast it runs — calls counted once each, no errors, percentiles in order, shares summing to one,
every layer present — and, through this directory's autouse guard, that nothing is left running.
"""
from __future__ import annotations

import cProfile
import math
import os

import pytest

from brpc_mini import perf
from brpc_mini.echo_server import EchoServerProcess
from rpc_helpers import free_port


@pytest.fixture(scope="module")
def server_address():
    with EchoServerProcess() as server:
        yield f"127.0.0.1:{server.port}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("senders,concurrency", [(1, 2), (4, 2), (3, 1)])
def test_load_counts_every_call_once_and_stops_everything(server_address, senders, concurrency):
    fds = open_fds()
    ticks = []
    result = perf.run_echo_load(server_address, senders, 0.4, concurrency=concurrency,
                                progress=lambda elapsed, calls: ticks.append((elapsed, calls)))
    assert result.senders == senders
    assert result.errors == 0
    assert result.calls == len(result.latencies_us) > 0
    assert result.qps > 0 and math.isclose(result.qps, result.calls / result.seconds)
    assert result.seconds >= 0.4
    assert result.latencies_us == sorted(result.latencies_us)
    assert 0 < result.latencies_us[0] <= result.p50 <= result.p99 <= result.p999 <= result.latencies_us[-1]
    assert result.percentile(0) == result.latencies_us[0] and result.percentile(1) == result.latencies_us[-1]
    assert f"{senders} sender" in result.describe() and "p99=" in result.describe()
    # the progress callback: elapsed and calls never go back, and the last tick is the whole run
    assert len(ticks) >= 2
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(ticks, ticks[1:]))
    assert ticks[-1] == (0.4, result.calls)
    assert open_fds() == fds, "the run left a socket, an epoll or a pipe open"


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(senders=0), ValueError, "senders must be >= 1"),
    (dict(senders=-2), ValueError, "senders must be >= 1"),
    (dict(senders=1.5), TypeError, "senders must be an int"),
    (dict(senders=True), TypeError, "senders must be an int"),
    (dict(duration_s=0), ValueError, "duration_s"),
    (dict(duration_s=-1.0), ValueError, "duration_s"),
    (dict(duration_s="1"), ValueError, "duration_s"),
    (dict(concurrency=0), ValueError, "concurrency"),
    (dict(address="localhost"), ValueError, "address must be 'ip:port'"),
    (dict(address="127.0.0.1:0"), ValueError, "address must be 'ip:port'"),
    (dict(address="127.0.0.1:70000"), ValueError, "address must be 'ip:port'"),
    (dict(address=8000), ValueError, "address must be 'ip:port'"),
    (dict(progress="tqdm"), TypeError, "progress must be callable"),
])
def test_load_rejects_bad_input_naming_it(kwargs, error, words):
    call = dict(address="127.0.0.1:8000", senders=1, duration_s=0.1)
    call.update(kwargs)
    with pytest.raises(error, match=words):
        perf.run_echo_load(call.pop("address"), call.pop("senders"), call.pop("duration_s"), **call)


def test_load_and_breakdown_say_when_nobody_answers():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"no echo server answered at {address}"):
        perf.run_echo_load(address, 2, 0.2)
    with pytest.raises(ConnectionError, match=f"no echo server answered at {address}"):
        perf.layer_breakdown(address, 10)
    for bad in (dict(calls=0), dict(top=0)):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be >= 1"):
            perf.layer_breakdown(address, **{"calls": 10, **bad})


def test_layer_breakdown_accounts_for_every_layer(server_address):
    fds = open_fds()
    b = perf.layer_breakdown(server_address, 300, top=3)
    assert open_fds() == fds
    assert b.calls == 300
    assert b.cpu_us_per_call > 0 and b.wall_us_per_call > 0 and b.profiled_cpu_us_per_call > 0
    assert [r.layer for r in b.rows] == perf.LAYER_NAMES
    assert math.isclose(sum(r.share for r in b.rows), 1.0, rel_tol=1e-9)
    assert math.isclose(sum(r.us_per_call for r in b.rows), b.cpu_us_per_call, rel_tol=1e-9)
    for r in b.rows:
        assert 0 <= r.share <= 1 and r.us_per_call >= 0
        assert len(r.top) <= 3
        assert [us for _, us in r.top] == sorted((us for _, us in r.top), reverse=True)
    # what every synchronous call does, whatever it costs: schedule, lock its Id, pack, write,
    # cut, parse, and cross the kernel
    for layer in ("bthread scheduling", "Butex & Id", "Channel.CallMethod & Controller", "baidu_std pack/parse",
                  "IOBuf", "Socket.Write / KeepWrite", "InputMessenger (cut)", "protobuf",
                  "syscalls (socket send/recv, epoll, select)"):
        assert b.row(layer).share > 0, f"{layer} is missing from the profile:\n{b.table()}"
    # every function of the library the calls ran belongs to a layer of its file
    for filename, _line, name in b.stats.stats:
        if filename.startswith(perf.PACKAGE_DIR) and not filename.endswith("perf.py"):
            assert perf.layer_of_file(filename) != perf.OTHER, f"{filename}:{name} has no layer"
    text = b.table()
    assert all(name in text for name in perf.LAYER_NAMES) and "total" in text


def test_rpc_timeline_times_every_stage_and_undoes_its_marks(server_address):
    from brpc_mini.rpc import channel, controller, event_dispatcher, input_messenger, socket
    from brpc_mini.rpc.iobuf import IOBuf
    patched = [(socket.Socket, "Write"), (IOBuf, "write_to"), (channel, "Join"),
               (event_dispatcher.EventDispatcher, "_wait_events"),
               (input_messenger.InputMessenger, "OnNewMessages"), (input_messenger, "ProcessInputMessage"),
               (controller.Controller, "EndRPC"), (controller, "bthread_id_unlock_and_destroy")]
    before = [getattr(owner, name) for owner, name in patched]
    fds = open_fds()
    t = perf.rpc_timeline(server_address, 300)
    assert open_fds() == fds
    assert [getattr(owner, name) for owner, name in patched] == before, "a mark was left in place"
    assert t.calls == 300 and 0 < t.samples <= 300
    assert [st.key for st in t.stages] == perf.TIMELINE_KEYS
    assert all(st.median_us > 0 and st.mean_us > 0 for st in t.stages), t.table()
    assert {st.kind for st in t.stages} == {"python", "kernel & server"}
    assert math.isclose(t.total_us(), t.total_us("python") + t.total_us("kernel & server"))
    # the stages tile one call: their medians add up to about one call (medians, not means: loose)
    assert 0.3 * t.wall_us_per_call < t.total_us() < 3 * t.wall_us_per_call, t.table()
    assert "wait" in t.table() and "took this path" in t.table()


def test_rpc_timeline_rejects_bad_input_naming_it():
    with pytest.raises(ValueError, match="calls must be >= 1"):
        perf.rpc_timeline("127.0.0.1:8000", 0)
    from brpc_mini.rpc.socket import Socket
    write = Socket.Write
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"no echo server answered at {address}"):
        perf.rpc_timeline(address, 10)
    assert Socket.Write is write, "a failed timeline left its marks in place"


def test_every_file_a_layer_names_exists():
    for layer in perf.LAYERS:
        for f in layer.files:
            if f.startswith("<stdlib>/"):
                path = os.path.join(os.path.dirname(os.__file__), f[len("<stdlib>/"):])
            elif f.startswith("google/"):
                continue
            else:
                path = os.path.join(perf.PACKAGE_DIR, f)
            assert os.path.exists(path), f"layer {layer.name!r} names {f}, which does not exist"


@pytest.mark.parametrize("label,layer", [
    ("<method 'poll' of 'select.epoll' objects>", "syscalls (socket send/recv, epoll, select)"),
    ("<method 'sendmsg' of '_socket.socket' objects>", "syscalls (socket send/recv, epoll, select)"),
    ("<built-in method posix.read>", "syscalls (socket send/recv, epoll, select)"),
    ("<built-in method select.select>", "syscalls (socket send/recv, epoll, select)"),
    ("<method 'switch' of 'greenlet.greenlet' objects>", "bthread scheduling"),
    ("<method 'acquire' of '_thread.lock' objects>", "locks & conditions"),
    ("<method 'SerializeToString' of 'google._upb._message.Message' objects>", "protobuf"),
    ("<built-in method FromString>", "protobuf"),
    ("<built-in method builtins.len>", None),
    ("<method 'append' of 'list' objects>", None),
])
def test_c_functions_map_by_owner(label, layer):
    assert perf.layer_of_builtin(label) == layer


def test_files_map_to_layers():
    pkg = perf.PACKAGE_DIR
    assert perf.layer_of_file(os.path.join(pkg, "bthread", "task_group.py")) == "bthread scheduling"
    assert perf.layer_of_file(os.path.join(pkg, "bthread", "id.py")) == "Butex & Id"
    assert perf.layer_of_file(os.path.join(pkg, "rpc", "policy", "baidu_rpc_protocol.py")) == "baidu_std pack/parse"
    assert perf.layer_of_file(os.path.join(pkg, "proto", "echo_pb2.py")) == "protobuf"
    assert perf.layer_of_file(os.path.join(os.path.dirname(os.__file__), "threading.py")) == "locks & conditions"
    assert perf.layer_of_file(os.path.join(os.path.dirname(os.__file__), "copy.py")) == perf.OTHER
    assert perf.layer_of_file(os.path.join(pkg, "rpc", "server.py")) == perf.OTHER
    # another copy of the package (an installed one, a second checkout) maps the same way
    assert perf.layer_of_file("/elsewhere/site-packages/brpc_mini/rpc/socket.py") == "Socket.Write / KeepWrite"


def test_merge_profiles_skips_empty_ones():
    busy, empty = cProfile.Profile(), cProfile.Profile()
    busy.enable()
    sorted(range(10))
    busy.disable()
    merged = perf.merge_profiles([empty, busy, cProfile.Profile()])
    assert any("sorted" in name for _, _, name in merged.stats)
    assert perf.merge_profiles([empty]) is None
