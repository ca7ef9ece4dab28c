"""brpc's example/multi_threaded_echo_c++/client.cpp on brpc_mini — the seed's program.

brpc: example/multi_threaded_echo_c++/client.cpp

    python -m brpc_mini.multi_threaded_echo_client --server 127.0.0.1:8002 --thread_num 8 --use_bthread

``--thread_num`` senders (plain threads, or bthreads started from main — a non-worker — with
``--use_bthread``) each send synchronous Echo calls in a loop on one Channel. Every second main
prints the QPS and the latency of the calls that completed in that second (average, as brpc's
example does, plus p50, p99 and p99.9); Ctrl-C, SIGTERM or ``--duration_s`` stop it, the senders are
joined, and a summary is printed.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .bthread import Runtime, bthread_join, bthread_start_background, bthread_usleep
from .proto import echo_pb2
from .rpc import Channel, ChannelOptions, Controller, make_stub

EchoService_Stub = make_stub(echo_pb2.DESCRIPTOR.services_by_name["EchoService"])


def percentile(sorted_values, fraction: float) -> int:
    """The value at ``fraction`` (0..1) of a sorted list, nearest rank; 0 for an empty list."""
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


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


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m brpc_mini.multi_threaded_echo_client",
                                     description="brpc's multi-threaded echo client on brpc_mini")
    parser.add_argument("--thread_num", type=int, default=50, help="number of senders")
    parser.add_argument("--use_bthread", action="store_true", help="senders are bthreads, not plain threads")
    parser.add_argument("--attachment_size", type=int, default=0, help="bytes of attachment per request")
    parser.add_argument("--request_size", type=int, default=16, help="bytes of each request")
    parser.add_argument("--protocol", default="baidu_std", help="only baidu_std")
    parser.add_argument("--connection_type", default="", help="single, pooled or short")
    parser.add_argument("--server", default="127.0.0.1:8002", help="ip:port, or list://... with --load_balancer")
    parser.add_argument("--load_balancer", default="", help="rr or random (with list://)")
    parser.add_argument("--timeout_ms", type=int, default=100, help="RPC timeout in milliseconds")
    parser.add_argument("--max_retry", type=int, default=3, help="max retries (not including the first RPC)")
    parser.add_argument("--dont_fail", action="store_true", help="stop at the first failed call")
    parser.add_argument("--duration_s", type=float, default=0, help="stop after this many seconds (0: Ctrl-C)")
    parser.add_argument("--concurrency", type=int, default=9,
                        help="bthread workers (brpc's default: 9). Under the GIL 1 gives the most QPS "
                             "and the shortest tails: more workers only hand off (benchmarks/README.md)")
    parser.add_argument("--enable_ssl", action="store_true", help="not supported")
    parser.add_argument("--dummy_port", type=int, default=-1, help="not supported")
    args = parser.parse_args(argv)
    if args.request_size <= 0:
        parser.error(f"--request_size must be positive, got {args.request_size}")
    if args.thread_num <= 0:
        parser.error(f"--thread_num must be positive, got {args.thread_num}")
    if args.attachment_size < 0:
        parser.error(f"--attachment_size must be >= 0, got {args.attachment_size}")
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
        while not stop.is_set():
            stop.wait(max(0.0, 1.0 - (time.monotonic() - last)))
            now = time.monotonic()
            window = recorder.take_window()
            if now - last > 0.05:
                print(f"Sending EchoRequest at {describe(window, now - last)}", flush=True)
            last = now
            if args.duration_s and now - started >= args.duration_s:
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
