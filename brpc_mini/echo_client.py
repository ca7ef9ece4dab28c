"""The echo client: brpc's example/echo_c++/client.cpp on brpc_mini.

brpc: example/echo_c++/client.cpp

    python -m brpc_mini.echo_client --server 127.0.0.1:8000    # also: brpc-mini-echo-client

Sends one synchronous Echo("hello world") every ``--interval_ms``, ``log_id`` counting from 0,
until Ctrl-C (or ``--count`` calls). The calls are made by the program's main thread, a non-worker:
each one blocks it in ``Join`` with a ButexPthreadWaiter, as in brpc.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .bthread import Runtime
from .proto import echo_pb2
from .rpc import Channel, ChannelOptions, Controller, make_stub
from .rpc.socket import endpoint2str

EchoService_Stub = make_stub(echo_pb2.DESCRIPTOR.services_by_name["EchoService"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brpc_mini.echo_client",
                                     description="brpc's echo client on brpc_mini")
    parser.add_argument("--attachment", default="", help="carry this along with requests")
    parser.add_argument("--protocol", default="baidu_std", help="only baidu_std")
    parser.add_argument("--connection_type", default="", help="single, pooled or short")
    parser.add_argument("--server", default="127.0.0.1:8000", help="ip:port, or list://... with --load_balancer")
    parser.add_argument("--load_balancer", default="", help="rr or random (with list://)")
    parser.add_argument("--timeout_ms", type=int, default=100, help="RPC timeout in milliseconds")
    parser.add_argument("--max_retry", type=int, default=3, help="max retries (not including the first RPC)")
    parser.add_argument("--interval_ms", type=int, default=1000, help="milliseconds between consecutive requests")
    parser.add_argument("--count", type=int, default=0, help="stop after this many calls (0: until Ctrl-C)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    failures = 0
    with Runtime(concurrency=4, mode="threads"):
        channel = Channel()
        options = ChannelOptions(protocol=args.protocol, connection_type=args.connection_type,
                                 timeout_ms=args.timeout_ms, max_retry=args.max_retry)
        if channel.Init(args.server, args.load_balancer, options) != 0:
            print("Fail to initialize channel", file=sys.stderr)
            return 1
        stub = EchoService_Stub(channel)
        log_id = 0
        while not stop.is_set():
            cntl = Controller()
            cntl.set_log_id(log_id)
            log_id += 1
            cntl.request_attachment().append(args.attachment.encode())
            response = stub.Echo(cntl, echo_pb2.EchoRequest(message="hello world"))
            if not cntl.Failed():
                print(f"Received response from {endpoint2str(cntl.remote_side())} to "
                      f"{endpoint2str(cntl.local_side())}: {response.message} "
                      f"(attached={bytes(cntl.response_attachment()).decode(errors='replace')}) "
                      f"latency={cntl.latency_us()}us", flush=True)
            else:
                failures += 1
                print(f"W {cntl.ErrorText()}", file=sys.stderr, flush=True)
            if args.count and log_id >= args.count:
                break
            stop.wait(args.interval_ms / 1000)
    print("EchoClient is going to quit", flush=True)
    return 1 if failures and args.count else 0


if __name__ == "__main__":
    sys.exit(main())
