"""The bundled echo server: brpc's example/echo_c++/server.cpp on brpc_mini.

brpc: example/echo_c++/server.cpp (and example/multi_threaded_echo_c++/server.cpp)

Command line (stops cleanly on Ctrl-C or SIGTERM)::

    python -m brpc_mini.echo_server --port 8000            # also: brpc-mini-echo-server

In a notebook or a test, on the current runtime (a deterministic runtime runs it in the same
process and the same schedule as the client, which makes even the reads reproducible)::

    with EchoServer() as server:          # port 0: the system picks one
        channel.Init(f"127.0.0.1:{server.port}", options)

``EchoServerProcess`` starts the command line server in a child process, for tests that need a
server outside the client's runtime; both always stop what they started.

The service can be told to misbehave, for the failure-path chapter: ``delay_us`` sleeps (a
``bthread_usleep``) before answering, ``drop`` never answers.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading

from .bthread import Runtime, bthread_usleep
from .proto import echo_pb2
from .rpc import Server
from .rpc.socket import endpoint2str

log = logging.getLogger("brpc_mini.echo_server")


class EchoServiceImpl:
    """``example.EchoService``: echo the message, and the attachment unless told not to.

    brpc: example/echo_c++/server.cpp, EchoServiceImpl::Echo
    """
    DESCRIPTOR = echo_pb2.DESCRIPTOR.services_by_name["EchoService"]

    def __init__(self, echo_attachment: bool = True, delay_us: int = 0, drop: bool = False):
        self.echo_attachment = echo_attachment
        self.delay_us = delay_us
        self.drop = drop
        self.nrequests = 0

    def Echo(self, cntl, request, response, done):
        self.nrequests += 1
        log.info("Received request[log_id=%d] from %s to %s: %s (attached=%s)", cntl.log_id(),
                 endpoint2str(cntl.remote_side()), endpoint2str(cntl.local_side()), request.message,
                 bytes(cntl.request_attachment()))
        if self.delay_us:
            bthread_usleep(self.delay_us)
        if self.drop:
            return
        if isinstance(request.message, bytes):
            # Not UTF-8: brpc's C++ copies the bytes as they are; protobuf-python parses them but
            # refuses to assign them to a string field, and the Echo raised (found by
            # tests/rpc/test_rpc_hypothesis_server.py). Copy the field in its wire form instead.
            response.MergeFromString(request.SerializeToString())
        else:
            response.message = request.message
        if self.echo_attachment:
            cntl.response_attachment().append(cntl.request_attachment())
        done.Run()


class EchoServer:
    """Start the echo server; stop it when the ``with`` ends.

    By default it runs on the current runtime. With ``peer_of=rt`` (a deterministic runtime) it
    gets a deterministic runtime of its own that ``rt`` drives whenever ``rt`` is idle — a server
    "in another process" whose bthreads, sockets and dispatchers do not mix with the client's, yet
    whose reads and writes stay reproducible. The walkthrough uses that so the client's bthreads
    are numbered as in the seed.
    """

    def __init__(self, port: int = 0, listen_addr: str = "127.0.0.1", echo_attachment: bool = True,
                 delay_us: int = 0, drop: bool = False, peer_of=None, concurrency: int = 2, seed: int = 0):
        self.address = f"{listen_addr}:{port}"
        self.service = EchoServiceImpl(echo_attachment, delay_us, drop)
        self.server = Server()
        self.server.AddService(self.service)
        self.port = None
        self.peer_of = peer_of
        self.runtime = None
        if peer_of is not None:
            self.runtime = Runtime(concurrency=concurrency, mode="deterministic", seed=seed, io_wait_ms=0)
            peer_of.add_peer(self.runtime)

    def start(self) -> int:
        if self.runtime is not None:
            with self.runtime.activate():
                self.port = self.server.Start(self.address)
        else:
            self.port = self.server.Start(self.address)
        return self.port

    def stop(self) -> None:
        if self.runtime is not None:
            with self.runtime.activate():
                self.server.Stop()
                self.server.Join()
            self.peer_of.remove_peer(self.runtime)
            self.runtime.close()
            return
        self.server.Stop()
        self.server.Join()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class ServerProcess:
    """A server in a child process that prints ``port=N`` on its first line (as the bundled echo
    server does); stopped with SIGTERM, then SIGKILL, when the ``with`` ends."""

    def __init__(self, argv, name: str = "server"):
        self.argv = list(argv)
        self.name = name
        self.proc = None
        self.port = None
        self._stderr = None

    def __enter__(self):
        import tempfile
        self._stderr = tempfile.TemporaryFile(mode="w+")   # a pipe nobody drains could block it
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        line = self.proc.stdout.readline()
        if "port=" not in line:
            self._stderr.seek(0)
            err = self._stderr.read()[-2000:] if self.proc.poll() is not None else ""
            self.__exit__()
            raise RuntimeError(f"{self.name} did not start: {line!r} {err}")
        self.port = int(line.rsplit("port=", 1)[1].split()[0])
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return False


class EchoServerProcess(ServerProcess):
    """``python -m brpc_mini.echo_server`` in a child process; killed when the ``with`` ends."""

    def __init__(self, port: int = 0, *extra_args: str):
        # --parent_pid: the server also quits if this process dies without leaving the ``with``
        # (a notebook kernel killed or restarted mid-chapter), instead of serving on as an orphan
        super().__init__([sys.executable, "-m", "brpc_mini.echo_server", "--port", str(port),
                          "--parent_pid", str(os.getpid()), *extra_args], "echo server")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brpc_mini.echo_server",
                                     description="brpc's echo server (example.EchoService) on brpc_mini")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument("--listen_addr", default="", help="ip:port to listen on; overrides --port")
    parser.add_argument("--echo_attachment", default="true", choices=["true", "false"],
                        help="echo the request attachment back")
    parser.add_argument("--concurrency", type=int, default=4, help="bthread workers")
    parser.add_argument("--verbose", action="store_true", help="log every request, as brpc's example does")
    parser.add_argument("--parent_pid", type=int, default=0,
                        help="quit when this process is no longer our parent (0: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    address = args.listen_addr or f"127.0.0.1:{args.port}"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Runtime(concurrency=args.concurrency, mode="threads"):
        server = EchoServer(echo_attachment=args.echo_attachment == "true")
        server.address = address
        try:
            port = server.start()
        except (OSError, ValueError) as exc:
            print(f"EchoServer: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"EchoServer is serving on port={port}", flush=True)
        while not stop.wait(0.5):
            if args.parent_pid and os.getppid() != args.parent_pid:
                print("EchoServer: the process that started it is gone", file=sys.stderr, flush=True)
                break
        server.stop()
    print("EchoServer is going to quit", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
