"""brpc's example/multi_threaded_echo_c++/client.cpp on brpc_mini — the seed's program.

brpc: example/multi_threaded_echo_c++/client.cpp

    python -m brpc_mini.echo_server &                      # the kit's echo server, port 8000
    python -m brpc_mini.multi_threaded_echo_client --thread_num 8 --use_bthread

``--thread_num`` senders (plain threads, or bthreads started from main — a non-worker — with
``--use_bthread``) each send synchronous Echo calls in a loop on one Channel. Every second main
prints the QPS and the latency of the calls that completed in that second (average, as brpc's
example does, plus p50, p99 and p99.9, nearest-rank percentiles); Ctrl-C, SIGTERM or
``--duration_s`` stop it, the senders are joined, and a summary is printed.

Flags keep brpc's names and defaults, with two differences. ``--server`` defaults to the kit's
echo server (127.0.0.1:8000): brpc's example defaults to port 8002, where its own
multi_threaded_echo_c++/server listens. ``--dont_fail``: brpc's ``CHECK`` aborts the process at the
first failed call; here the error is printed, the senders stop, the summary is printed and the exit
code is 1. Boolean flags take gflags' forms: ``--use_bthread``, ``--use_bthread=true``,
``--use_bthread=false``, ``--nouse_bthread``.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time

from .bthread import Runtime, bthread_join, bthread_start_background, bthread_usleep
from .proto import echo_pb2
from .rpc import Channel, ChannelOptions, Controller, make_stub

EchoService_Stub = make_stub(echo_pb2.DESCRIPTOR.services_by_name["EchoService"])


def percentile(sorted_values, fraction: float) -> int:
    """The nearest-rank percentile of a sorted list: the smallest value with at least ``fraction``
    (0..1) of the values at or below it — ``sorted_values[ceil(fraction * n) - 1]``, the first value
    for ``fraction`` 0. 0 for an empty list."""
    n = len(sorted_values)
    if not n:
        return 0
    # round() first: 0.999 * 1000 is 998.9999999999999 in floating point, whose ceil is 999 anyway,
    # but 0.07 * 100 is 7.000000000000001, whose ceil would skip a rank
    rank = math.ceil(round(fraction * n, 9))
    return sorted_values[min(n, max(1, rank)) - 1]


class LatencyRecorder:
    """Latencies of completed calls, per reporting window and in total (brpc: bvar::LatencyRecorder)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._window = []
        self.total = []
        self.errors = 0

    def record(self, latency_us: int) -> None:
        with self._lock:
            self._window.append(latency_us)

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def take_window(self) -> list:
        with self._lock:
            window, self._window = self._window, []
        self.total.extend(window)
        return sorted(window)


def describe(latencies_sorted, seconds: float) -> str:
    n = len(latencies_sorted)
    qps = n / seconds if seconds > 0 else 0.0
    avg = sum(latencies_sorted) // n if n else 0
    return (f"qps={qps:.0f} latency={avg} p50={percentile(latencies_sorted, 0.5)} "
            f"p99={percentile(latencies_sorted, 0.99)} p99.9={percentile(latencies_sorted, 0.999)}")


def sender(channel, args, recorder, stop) -> None:
    """brpc: client.cpp, static void* sender(void* arg)"""
    stub = EchoService_Stub(channel)
    request = echo_pb2.EchoRequest(message="r" * args.request_size)
    attachment = b"a" * args.attachment_size
    log_id = 0
    while not stop.is_set():
        cntl = Controller()
        cntl.set_log_id(log_id)
        log_id += 1
        if attachment:
            cntl.request_attachment().append(attachment)
        stub.Echo(cntl, request)
        if not cntl.Failed():
            recorder.record(cntl.latency_us())
        else:
            recorder.error()
            if args.dont_fail:
                print(f"error={cntl.ErrorText()} latency={cntl.latency_us()}", file=sys.stderr, flush=True)
                stop.set()
                return
            bthread_usleep(50_000)   # don't overload the server when it is failing


_GFLAGS_TRUE = ("true", "t", "yes", "y", "1")
_GFLAGS_FALSE = ("false", "f", "no", "n", "0")


def gflags_bool(text: str) -> bool:
    """A boolean flag's value as gflags reads it (case-insensitive true/t/yes/y/1, false/f/no/n/0)."""
    value = text.strip().lower()
    if value in _GFLAGS_TRUE:
        return True
    if value in _GFLAGS_FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_bool_flag(parser, name: str, help_text: str) -> None:
    """``--name``, ``--name=true|false`` and ``--noname``, as gflags' DEFINE_bool accepts."""
    parser.add_argument(f"--{name}", type=gflags_bool, nargs="?", const=True, default=False,
                        metavar="true|false", help=help_text)
    parser.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m brpc_mini.multi_threaded_echo_client",
                                     description="brpc's multi-threaded echo client on brpc_mini")
    parser.add_argument("--thread_num", type=int, default=50, help="number of senders")
    add_bool_flag(parser, "use_bthread", "senders are bthreads, not plain threads")
    parser.add_argument("--attachment_size", type=int, default=0, help="bytes of attachment per request")
    parser.add_argument("--request_size", type=int, default=16, help="bytes of each request")
    parser.add_argument("--protocol", default="baidu_std", help="only baidu_std")
    parser.add_argument("--connection_type", default="", help="single, pooled or short")
    parser.add_argument("--server", default="127.0.0.1:8000",
                        help="ip:port, or list://... with --load_balancer. Default: the kit's echo server "
                             "(python -m brpc_mini.echo_server listens on 8000); brpc's example defaults "
                             "to port 8002, where its multi_threaded_echo_c++ server listens")
    parser.add_argument("--load_balancer", default="", help="rr or random (with list://)")
    parser.add_argument("--timeout_ms", type=int, default=100, help="RPC timeout in milliseconds")
    parser.add_argument("--max_retry", type=int, default=3, help="max retries (not including the first RPC)")
    add_bool_flag(parser, "dont_fail", "stop at the first failed call: print its error, stop the senders, "
                                       "print the summary and exit 1 (brpc's CHECK aborts the process)")
    parser.add_argument("--duration_s", type=float, default=0,
                        help="stop after this many seconds, fractions included (0: run until Ctrl-C)")
    parser.add_argument("--concurrency", type=int, default=9,
                        help="bthread workers (brpc's default: 9). Under the GIL 1 gives the most QPS "
                             "and the shortest tails: more workers only hand off (benchmarks/README.md)")
    add_bool_flag(parser, "enable_ssl", "not supported")
    parser.add_argument("--dummy_port", type=int, default=-1, help="not supported")
    args = parser.parse_args(argv)
    if args.request_size <= 0:
        parser.error(f"--request_size must be positive, got {args.request_size}")
    if args.thread_num <= 0:
        parser.error(f"--thread_num must be positive, got {args.thread_num}")
    if args.attachment_size < 0:
        parser.error(f"--attachment_size must be >= 0, got {args.attachment_size}")
    if not args.duration_s >= 0:
        parser.error(f"--duration_s must be >= 0, got {args.duration_s}")
    if args.enable_ssl or args.dummy_port != -1:
        parser.error("--enable_ssl and --dummy_port are not supported by brpc_mini")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    recorder = LatencyRecorder()
    with Runtime(concurrency=args.concurrency, mode="threads") as rt:
        options = ChannelOptions(protocol=args.protocol, connection_type=args.connection_type,
                                 timeout_ms=args.timeout_ms, max_retry=args.max_retry,
                                 connect_timeout_ms=min(args.timeout_ms // 2, 100))
        channel = Channel()
        if channel.Init(args.server, args.load_balancer, options) != 0:
            print("Fail to initialize channel", file=sys.stderr)
            return 1
        if args.use_bthread:
            tids = [bthread_start_background(sender, channel, args, recorder, stop) for _ in range(args.thread_num)]
            threads = []
        else:
            tids = []
            threads = [rt.start_pthread(sender, channel, args, recorder, stop, name=f"sender_{i}")
                       for i in range(args.thread_num)]
        started = last = time.monotonic()
        deadline = started + args.duration_s if args.duration_s else None
        while not stop.is_set():
            wait_s = 1.0 - (time.monotonic() - last)
            if deadline is not None:
                wait_s = min(wait_s, deadline - time.monotonic())   # not rounded up to a whole second
            stop.wait(max(0.0, wait_s))
            now = time.monotonic()
            window = recorder.take_window()
            if now - last > 0.05:
                print(f"Sending EchoRequest at {describe(window, now - last)}", flush=True)
            last = now
            if deadline is not None and now >= deadline:
                stop.set()
        for tid in tids:
            bthread_join(tid)
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    recorder.take_window()
    total = sorted(recorder.total)
    print(f"EchoClient is going to quit: {len(total)} calls, {recorder.errors} errors in {elapsed:.1f}s, "
          f"{describe(total, elapsed)}", flush=True)
    return 1 if recorder.errors and args.dont_fail else 0


if __name__ == "__main__":
    sys.exit(main())
