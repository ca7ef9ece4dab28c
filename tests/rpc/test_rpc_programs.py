"""The command-line programs, run as a user would: ``python -m brpc_mini.echo_server`` and
``python -m brpc_mini.echo_client`` (brpc's example/echo_c++ server and client), and
``EchoServerProcess``, which tests use to get a server outside their own runtime.

Every child process is stopped and reaped, even when an assertion fails.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from brpc_mini.echo_server import EchoServerProcess
from brpc_mini.rpc import Channel, ChannelOptions
from rpc_helpers import echo, free_port

#: generous: starting Python and importing protobuf takes a while on a busy machine
START_TIMEOUT_S = 30
EXIT_TIMEOUT_S = 15


@contextlib.contextmanager
def echo_server_program(*args: str):
    """``python -m brpc_mini.echo_server --port 0 ...``; yields (process, port)."""
    proc = subprocess.Popen([sys.executable, "-m", "brpc_mini.echo_server", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_line = proc.stdout.readline()
        assert first_line.startswith("EchoServer is serving on port="), \
            f"unexpected first line {first_line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        port = int(first_line.strip().rsplit("=", 1)[1])
        assert 0 < port < 65536
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(EXIT_TIMEOUT_S)
        proc.stdout.close()
        proc.stderr.close()


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brpc_mini.echo_client", *args],
                          capture_output=True, text=True, timeout=START_TIMEOUT_S)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_serves_the_client_and_quits_on_a_signal(stop_signal):
    with echo_server_program() as (proc, port):
        # --timeout_ms: the example's 100 ms is tight for a busy test machine; nothing else changes
        client = run_client("--server", f"127.0.0.1:{port}", "--count", "3", "--interval_ms", "10",
                            "--timeout_ms", "5000")
        assert client.returncode == 0, (client.stdout, client.stderr)
        lines = client.stdout.splitlines()
        received = [line for line in lines if line.startswith("Received response from")]
        assert len(received) == 3, client.stdout
        for line in received:
            assert f"Received response from 127.0.0.1:{port} to 127.0.0.1:" in line
            assert ": hello world (attached=) latency=" in line and line.endswith("us")
        assert lines[-1] == "EchoClient is going to quit"
        assert client.stderr == ""
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
        assert proc.returncode == 0, err
        assert out.strip().splitlines()[-1] == "EchoServer is going to quit"


def test_client_with_attachment_and_connection_types():
    with echo_server_program() as (proc, port):
        for connection_type in ("single", "pooled", "short"):
            client = run_client("--server", f"127.0.0.1:{port}", "--count", "2", "--interval_ms", "0",
                                "--timeout_ms", "5000", "--attachment", "ATTACH-DATA",
                                "--connection_type", connection_type)
            assert client.returncode == 0, (client.stdout, client.stderr)
            received = [line for line in client.stdout.splitlines() if line.startswith("Received")]
            assert len(received) == 2 and all("(attached=ATTACH-DATA)" in line for line in received)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=EXIT_TIMEOUT_S)
        assert proc.returncode == 0


def test_client_with_a_list_and_a_load_balancer():
    with echo_server_program() as (a, port_a), echo_server_program() as (b, port_b):
        client = run_client("--server", f"list://127.0.0.1:{port_a},127.0.0.1:{port_b}",
                            "--load_balancer", "rr", "--count", "4", "--interval_ms", "0",
                            "--timeout_ms", "5000")
        assert client.returncode == 0, (client.stdout, client.stderr)
        received = [line for line in client.stdout.splitlines() if line.startswith("Received")]
        assert len(received) == 4
        assert {port_a, port_b} == {int(line.split()[3].rsplit(":", 1)[1]) for line in received}
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=EXIT_TIMEOUT_S)
            assert proc.returncode == 0


def test_client_without_a_server_reports_failures_and_quits():
    client = run_client("--server", f"127.0.0.1:{free_port()}", "--count", "2", "--interval_ms", "0")
    assert client.returncode == 1                       # with --count, failures make the exit code 1
    assert "Received" not in client.stdout
    assert client.stdout.strip() == "EchoClient is going to quit"
    warnings = [line for line in client.stderr.splitlines() if line.startswith("W ")]
    assert len(warnings) == 2
    assert all("[E111]" in line or "[E112]" in line for line in warnings)


def test_client_rejects_a_bad_server_address():
    client = run_client("--server", "not-an-address", "--count", "1")
    assert client.returncode == 1
    assert "Fail to initialize channel" in client.stderr


def test_server_reports_a_port_it_cannot_listen_on():
    with EchoServerProcess() as taken:
        proc = subprocess.run([sys.executable, "-m", "brpc_mini.echo_server", "--port", str(taken.port)],
                              capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert proc.returncode == 1
    assert f"Fail to listen 127.0.0.1:{taken.port}" in proc.stderr


def test_echo_server_process_serves_a_client_runtime(rt):
    with EchoServerProcess() as server:
        channel = Channel()
        assert channel.Init(f"127.0.0.1:{server.port}", ChannelOptions(timeout_ms=5_000)) == 0
        for i in range(3):
            cntl, response = echo(channel, f"to the process {i}", attachment=b"att")
            assert not cntl.Failed(), cntl.ErrorText()
            assert response.message == f"to the process {i}"
            assert cntl.response_attachment().to_bytes() == b"att"
        proc = server.proc
    assert proc.returncode == 0, "SIGTERM makes the server quit cleanly"


def test_echo_server_process_echo_attachment_flag(rt):
    with EchoServerProcess(0, "--echo_attachment", "false") as server:
        channel = Channel()
        assert channel.Init(f"127.0.0.1:{server.port}", ChannelOptions(timeout_ms=5_000)) == 0
        cntl, response = echo(channel, "x", attachment=b"att")
        assert not cntl.Failed(), cntl.ErrorText()
        assert cntl.response_attachment().to_bytes() == b""


def test_echo_server_process_quits_when_its_parent_dies():
    """A notebook kernel killed mid-chapter never leaves the ``with``: the server must not serve on
    as an orphan. The parent here is a short-lived python that starts it and exits at once."""
    code = ("import os; from brpc_mini.echo_server import EchoServerProcess; "
            "s = EchoServerProcess().__enter__(); print(s.proc.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return      # exited; an init that does not reap (some containers) keeps a zombie
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"echo server {pid} outlived the process that started it")


# -- python -m brpc_mini.multi_threaded_echo_client ------------------------------------------------

from brpc_mini import multi_threaded_echo_client as mt_client  # noqa: E402


@pytest.mark.parametrize("argv, use_bthread, dont_fail", [
    ([], False, False),
    (["--use_bthread"], True, False),
    (["--use_bthread=true"], True, False),
    (["--use_bthread=false"], False, False),
    (["--use_bthread=1", "--dont_fail=yes"], True, True),
    (["--use_bthread", "--nouse_bthread"], False, False),
    (["--dont_fail"], False, True),
    (["--dont_fail=true"], False, True),
    (["--dont_fail=FALSE", "--use_bthread=True"], True, False),
    (["--enable_ssl=false"], False, False),
])
def test_multi_threaded_client_takes_gflags_booleans(argv, use_bthread, dont_fail):
    """brpc's flags are gflags: ``--use_bthread=false`` is how brpc's docs turn it off (argparse's
    store_true refused it: "ignored explicit argument 'false'")."""
    args = mt_client.parse_args(argv)
    assert (args.use_bthread, args.dont_fail) == (use_bthread, dont_fail)


@pytest.mark.parametrize("argv, words", [
    (["--use_bthread=maybe"], "expected true or false, got 'maybe'"),
    (["--enable_ssl"], "not supported"),
    (["--duration_s", "-1"], "--duration_s must be >= 0"),
])
def test_multi_threaded_client_refuses_bad_flags(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        mt_client.parse_args(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_multi_threaded_client_defaults_to_the_kits_echo_server(capsys):
    """brpc's example talks to its own multi-threaded server on 8002; the kit's echo server (the
    one ``python -m brpc_mini.echo_server`` starts) listens on 8000, so two programs run with their
    defaults meet."""
    assert mt_client.parse_args([]).server == "127.0.0.1:8000"
    with pytest.raises(SystemExit):
        mt_client.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "8000" in help_text and "8002" in help_text


@pytest.mark.parametrize("values, fraction, expected", [
    (list(range(1, 101)), 0.99, 99),       # was 100: "p99" was the maximum
    (list(range(1, 11)), 0.5, 5),          # was 6
    (list(range(1, 1001)), 0.999, 999),    # was 1000
    ([1, 2], 0.5, 1),                      # was 2
    (list(range(1, 101)), 0.07, 7),        # 0.07 * 100 is 7.000000000000001 in floating point
    (list(range(1, 11)), 0.95, 10),
    ([3, 4, 5], 0.0, 3),
    ([3, 4, 5], 1.0, 5),
    ([], 0.5, 0),
])
def test_percentile_is_nearest_rank(values, fraction, expected):
    """Nearest rank: the smallest value with at least ``fraction`` of the values at or below it."""
    assert mt_client.percentile(values, fraction) == expected


def test_multi_threaded_client_stops_after_a_fraction_of_a_second():
    """``--duration_s 0.2`` ran a whole second: the deadline was checked only after each
    one-second report."""
    with EchoServerProcess() as server:
        out = subprocess.run([sys.executable, "-m", "brpc_mini.multi_threaded_echo_client",
                              "--server", f"127.0.0.1:{server.port}", "--thread_num", "2",
                              "--use_bthread", "--dont_fail", "--timeout_ms", "5000",
                              "--duration_s", "0.2"],
                             capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.startswith("EchoClient is going to quit: ") and " 0 errors in " in summary, summary
    elapsed = float(summary.split(" errors in ")[1].split("s,")[0])
    assert 0.2 <= elapsed < 1.0, summary       # the old loop could not stop before 1.0 s
