"""Interop with real brpc, when its example programs are on this machine.

Set ``BRPC_EXAMPLE_DIR`` to a directory holding brpc's built ``example/echo_c++`` binaries
(``echo_server`` and ``echo_client``); otherwise these tests are skipped and the golden frames
(tests/data/golden, captured from the same programs) stand in for them. brpc's sources are never
part of this repository: build them outside it (README, "Checking against real brpc").
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from brpc_mini.echo_server import EchoServerProcess

BRPC_DIR = os.environ.get("BRPC_EXAMPLE_DIR", "")
pytestmark = pytest.mark.skipif(
    not (BRPC_DIR and os.path.exists(os.path.join(BRPC_DIR, "echo_server"))),
    reason="set BRPC_EXAMPLE_DIR to brpc's built example/echo_c++ directory to run interop tests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_brpc_client_calls_the_bundled_server():
    with EchoServerProcess() as server:
        proc = subprocess.Popen([os.path.join(BRPC_DIR, "echo_client"), f"--server=127.0.0.1:{server.port}",
                                 "--attachment=ATTACH", "--interval_ms=50"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(2)
        finally:
            proc.terminate()
            text, _ = proc.communicate(timeout=10)
    responses = re.findall(r"Received response from .*: hello world \(attached=ATTACH\)", text)
    assert len(responses) >= 5, text[-2000:]


def test_bundled_client_calls_a_real_brpc_server():
    port = _free_port()
    server = subprocess.Popen([os.path.join(BRPC_DIR, "echo_server"), f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        out = subprocess.run([sys.executable, "-m", "brpc_mini.echo_client", "--server", f"127.0.0.1:{port}",
                              "--count", "3", "--interval_ms", "10", "--attachment", "hey"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.count("hello world (attached=hey)") == 3, out.stdout + out.stderr
        out = subprocess.run([sys.executable, "-m", "brpc_mini.multi_threaded_echo_client", "--server",
                              f"127.0.0.1:{port}", "--thread_num", "8", "--use_bthread", "--duration_s", "2",
                              "--dont_fail"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and " 0 errors" in out.stdout, out.stdout + out.stderr
    finally:
        server.terminate()
        server.wait(10)
