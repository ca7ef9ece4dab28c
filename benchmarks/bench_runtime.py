#!/usr/bin/env python
"""How fast is brpc_mini's bthread runtime, next to raw greenlets and gevent, on this machine?

    python benchmarks/bench_runtime.py            # full run (about 15-60 s), prints a table
    python benchmarks/bench_runtime.py --check    # same, exit status 1 if a target is missed
    python benchmarks/bench_runtime.py --quick    # CI smoke: every benchmark once, few iterations

Every figure is measured in the same run as the figures it is compared with, so the ratios
mean something even on a noisy or slow machine; the absolute microseconds do not travel.

Rows
----
greenlet  switch (ping-pong between two greenlets, per switch); create+switch+finish of a fresh
          greenlet; a task run on a reused greenlet (a pool loop, brpc's stack reuse).
gevent    spawn+join; Event set/wait round trip between two greenlets; sleep(0) (a yield).
brpc_mini bthread_start_background + bthread_join from inside a bthread; butex wait/wake
          round trip between two bthreads; bthread_yield of a lone bthread. Each in
          deterministic mode (concurrency 1 and 4, switch_budget 1 and 64, trace off) and in
          threads mode (concurrency 1 and 4).

Each figure is the best of ``--repeats`` timed loops (time.perf_counter_ns, the garbage collector
paused as ``timeit`` does) of ``--iterations`` operations; a brpc_mini loop runs and times itself
inside a bthread, so starting and closing the runtime is not counted.

Targets (from the issue)
------------------------
* bthread start+join costs at most half of gevent's spawn+join;
* a butex wait/wake round trip is no slower than gevent's Event set/wait round trip.
Each is judged, PASS or MISS, for every brpc_mini configuration but the single-step ones
(deterministic, switch_budget 1: ``b=1``), which are printed as pass/info and are not targets.
A benchmark, not a test: the exit status is 0 whatever the verdicts, unless ``--check`` is given.

``--profile`` runs the brpc_mini rows (one timed loop each) under cProfile instead, and prints
where the time goes; ``-k TEXT`` keeps only the rows whose name or config contains TEXT (the gevent
reference rows are always measured).
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time

try:
    import brpc_mini  # noqa: F401
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import greenlet

from brpc_mini.bthread import (
    Runtime, butex_create, butex_wait, butex_wake, bthread_join, bthread_start_background,
    bthread_yield,
)

try:
    import gevent
    import gevent.event
except ImportError:  # gevent is a test extra; without it the gevent rows and targets are skipped
    gevent = None

perf_ns = time.perf_counter_ns


# ---------------------------------------------------------------------------------------------
# timing helpers

class _NoGC:
    """Pause the cyclic garbage collector around a timed loop, as ``timeit`` does."""

    def __enter__(self):
        self.was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc):
        if self.was_enabled:
            gc.enable()
        return False


def _loops(run_once, n, repeats, warmup, per_op_divisor=1):
    """Call ``run_once(k)`` (which runs k operations and returns elapsed ns) once with ``warmup``
    then ``repeats`` times with ``n``; returns ns per operation of each timed repeat."""
    if warmup:
        run_once(warmup)
    samples = []
    for _ in range(repeats):
        with _NoGC():
            elapsed = run_once(n)
        samples.append(elapsed / (n * per_op_divisor))
    return samples


def _noop():
    pass


# ---------------------------------------------------------------------------------------------
# raw greenlet

def greenlet_switch(n, repeats, warmup):
    """Two greenlets ping-pong; per switch (one iteration is two switches)."""
    main = greenlet.getcurrent()

    def other():
        while True:
            main.switch()

    g = greenlet.greenlet(other)
    g.switch()

    def run_once(k):
        sw = g.switch
        t0 = perf_ns()
        for _ in range(k):
            sw()
        return perf_ns() - t0

    try:
        return _loops(run_once, n, repeats, warmup, per_op_divisor=2)
    finally:
        g.throw(greenlet.GreenletExit)


def greenlet_fresh(n, repeats, warmup):
    """Create a greenlet, switch into it, let it finish."""
    def run_once(k):
        new = greenlet.greenlet
        t0 = perf_ns()
        for _ in range(k):
            new(_noop).switch()
        return perf_ns() - t0

    return _loops(run_once, n, repeats, warmup)


def greenlet_reuse(n, repeats, warmup):
    """Run a task on a pooled greenlet: take one from the pool (or make one), switch the task
    into it; the greenlet runs it, parks itself back in the pool and switches back."""
    main = greenlet.getcurrent()
    pool = []

    def worker(task):
        me = greenlet.getcurrent()
        while True:
            task()
            pool.append(me)
            task = main.switch()

    def run_once(k):
        t0 = perf_ns()
        for _ in range(k):
            g = pool.pop() if pool else greenlet.greenlet(worker)
            g.switch(_noop)
        return perf_ns() - t0

    try:
        return _loops(run_once, n, repeats, warmup)
    finally:
        for g in pool:
            g.throw(greenlet.GreenletExit)


# ---------------------------------------------------------------------------------------------
# gevent

def gevent_spawn_join(n, repeats, warmup):
    def run_once(k):
        spawn = gevent.spawn
        t0 = perf_ns()
        for _ in range(k):
            spawn(_noop).join()
        return perf_ns() - t0

    return _loops(run_once, n, repeats, warmup)


def gevent_event_rt(n, repeats, warmup):
    """ping sets e1 and waits e2; pong waits e1 and sets e2: one iteration is one round trip."""
    def run_once(k):
        e1, e2 = gevent.event.Event(), gevent.event.Event()

        def pong():
            for _ in range(k):
                e1.wait()
                e1.clear()
                e2.set()

        p = gevent.spawn(pong)
        gevent.sleep(0)           # pong is waiting on e1
        t0 = perf_ns()
        for _ in range(k):
            e1.set()
            e2.wait()
            e2.clear()
        elapsed = perf_ns() - t0
        p.join()
        return elapsed

    return _loops(run_once, n, repeats, warmup)


def gevent_sleep0(n, repeats, warmup):
    def run_once(k):
        sleep = gevent.sleep
        t0 = perf_ns()
        for _ in range(k):
            sleep(0)
        return perf_ns() - t0

    return _loops(run_once, n, repeats, warmup)


# ---------------------------------------------------------------------------------------------
# brpc_mini: every loop runs, and times itself, inside a bthread

def _run_in_bthread(cfg, body, profiler=None):
    """Run ``body()`` in a bthread of a fresh runtime made with ``cfg``; returns its result."""
    out = {}

    def outer():
        if profiler is not None:
            profiler.enable()
        try:
            out["result"] = body()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            out["error"] = exc
        finally:
            if profiler is not None:
                profiler.disable()

    with Runtime(**cfg) as rt:
        bthread_join(bthread_start_background(outer))
        errors = list(rt.errors)
    if "error" in out:
        raise out["error"]
    if errors:
        raise RuntimeError(f"bthreads raised: {errors}")
    return out["result"]


def bthread_start_join(cfg, n, repeats, warmup, profiler=None):
    def body():
        def run_once(k):
            start, join = bthread_start_background, bthread_join
            t0 = perf_ns()
            for _ in range(k):
                join(start(_noop))
            return perf_ns() - t0

        return _loops(run_once, n, repeats, warmup)

    return _run_in_bthread(cfg, body, profiler)


def butex_round_trip(cfg, n, repeats, warmup, profiler=None):
    """ping bumps b1 and wakes it, then waits until pong has bumped b2; pong waits on b1, bumps
    b2 and wakes it. One iteration is one round trip; ping times it."""
    def body():
        total = warmup + n * repeats
        b1, b2 = butex_create(0), butex_create(0)

        def pong():
            for i in range(total):
                while b1.value == i:
                    butex_wait(b1, i)
                b2.value = i + 1
                butex_wake(b2)

        tid = bthread_start_background(pong)
        stamps = []
        chunk_ends = {warmup + n * r for r in range(repeats + 1)}
        gc_was = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            for i in range(total):
                if i in chunk_ends:
                    stamps.append(perf_ns())
                b1.value = i + 1
                butex_wake(b1)
                while b2.value == i:
                    butex_wait(b2, i)
            stamps.append(perf_ns())
        finally:
            if gc_was:
                gc.enable()
        bthread_join(tid)
        return [(b - a) / n for a, b in zip(stamps, stamps[1:])]

    return _run_in_bthread(cfg, body, profiler)


def bthread_yield_alone(cfg, n, repeats, warmup, profiler=None):
    def body():
        def run_once(k):
            y = bthread_yield
            t0 = perf_ns()
            for _ in range(k):
                y()
            return perf_ns() - t0

        return _loops(run_once, n, repeats, warmup)

    return _run_in_bthread(cfg, body, profiler)


BRPC_CONFIGS = [
    ("det c=1 b=1", dict(mode="deterministic", concurrency=1, switch_budget=1, trace=False)),
    ("det c=1 b=64", dict(mode="deterministic", concurrency=1, switch_budget=64, trace=False)),
    ("det c=4 b=1", dict(mode="deterministic", concurrency=4, switch_budget=1, trace=False)),
    ("det c=4 b=64", dict(mode="deterministic", concurrency=4, switch_budget=64, trace=False)),
    ("threads c=1", dict(mode="threads", concurrency=1)),
    ("threads c=4", dict(mode="threads", concurrency=4)),
]


# ---------------------------------------------------------------------------------------------
# the run

class Row:
    def __init__(self, group, name, config, ref, samples, n):
        self.group, self.name, self.config, self.ref = group, name, config, ref
        self.samples, self.n = samples, n

    @property
    def key(self):
        return f"{self.name} [{self.config}]" if self.config else self.name

    @property
    def best_us(self):
        return min(self.samples) / 1000.0

    @property
    def median_us(self):
        return statistics.median(self.samples) / 1000.0


def _scaled_n(per_op_ns, n, repeats, row_budget_s, n_min):
    """Fewer iterations for a slow row, so that the whole run stays within its time budget."""
    if per_op_ns <= 0:
        return n
    fit = int(row_budget_s * 1e9 / (per_op_ns * repeats))
    return max(min(n, fit), min(n, n_min))


def run_all(args):
    rows = []
    n, repeats, warmup = args.iterations, args.repeats, args.warmup

    def add(group, name, config, ref, fn, *pre):
        # the gevent rows are the references of the targets: measured whatever the filter
        if args.filter and args.filter not in f"{name} {config}" and group != "gevent":
            return
        # pilot: a short loop to size the real one (skipped in quick mode)
        k = n
        if not args.quick:
            pilot = fn(*pre, max(200, n // 20), 1, warmup)
            k = _scaled_n(min(pilot), n, repeats, args.row_budget, args.min_iterations)
        samples = fn(*pre, k, repeats, warmup)
        rows.append(Row(group, name, config, ref, samples, k))
        if args.verbose:
            print(f"  {rows[-1].key}: {rows[-1].best_us:.3f} us", file=sys.stderr, flush=True)

    add("greenlet", "switch (ping-pong, per switch)", "", "switch (ping-pong, per switch)", greenlet_switch)
    add("greenlet", "create+switch+finish", "", "switch (ping-pong, per switch)", greenlet_fresh)
    add("greenlet", "task on a reused greenlet", "", "switch (ping-pong, per switch)", greenlet_reuse)
    if gevent is not None:
        add("gevent", "gevent spawn+join", "", "gevent spawn+join", gevent_spawn_join)
        add("gevent", "gevent Event round trip", "", "gevent Event round trip", gevent_event_rt)
        add("gevent", "gevent sleep(0)", "", "gevent sleep(0)", gevent_sleep0)
    for label, cfg in BRPC_CONFIGS:
        add("brpc_mini", "bthread start+join", label, "gevent spawn+join", bthread_start_join, cfg)
        add("brpc_mini", "butex wait/wake round trip", label, "gevent Event round trip", butex_round_trip, cfg)
        add("brpc_mini", "bthread_yield", label, "gevent sleep(0)", bthread_yield_alone, cfg)
    return rows


TARGETS = [
    # (title, brpc_mini row name, reference row name, max ratio)
    ("bthread start+join <= 0.5 x gevent spawn+join", "bthread start+join", "gevent spawn+join", 0.5),
    ("butex round trip <= 1.0 x gevent Event round trip", "butex wait/wake round trip",
     "gevent Event round trip", 1.0),
]


def print_table(rows, args):
    by_name = {r.name: r for r in rows if not r.config}
    print(f"brpc_mini runtime benchmarks - Python {platform.python_version()}, greenlet "
          f"{greenlet.__version__}, gevent {gevent.__version__ if gevent else 'missing'}, "
          f"{os.cpu_count()} CPUs, {'quick' if args.quick else f'best of {args.repeats}'}")
    header = f"{'benchmark':<32} {'config':<13} {'iters':>6} {'best us':>9} {'median':>9} {'ratio':>7}  vs"
    print(header)
    print("-" * (len(header) + 28))
    group = None
    for r in rows:
        if r.group != group:
            if group is not None:
                print()
            group = r.group
        ref = by_name.get(r.ref)
        if ref is None:
            ratio, vs = "", ""
        elif ref is r:
            ratio, vs = "1.00", "(reference)"
        else:
            ratio, vs = f"{r.best_us / ref.best_us:.2f}", r.ref
        print(f"{r.name:<32} {r.config:<13} {r.n:>6} {r.best_us:>9.3f} {r.median_us:>9.3f} {ratio:>7}  {vs}")


def judge(rows):
    """Print a PASS/MISS line per target and configuration; returns the number of misses."""
    by_name = {r.name: r for r in rows if not r.config}
    misses = 0
    print()
    print("targets")
    for title, name, ref_name, limit in TARGETS:
        ref = by_name.get(ref_name)
        mine = [r for r in rows if r.name == name and r.config]
        if ref is None or not mine:
            print(f"  SKIP  {title}: {'gevent missing' if gevent is None else 'not measured'}")
            continue
        print(f"  {title} (gevent: {ref.best_us:.3f} us, limit {limit * ref.best_us:.3f} us)")
        for r in mine:
            ratio = r.best_us / ref.best_us
            ok = ratio <= limit
            if r.config.endswith(" b=1"):
                # switch_budget=1 is the single-stepping mode of the chapters: every switch goes
                # back to the driver (about 1.5 us a round). Reported, not held to the targets.
                print(f"    {'pass' if ok else 'info'}  {r.config:<13} {r.best_us:8.3f} us  ratio {ratio:.2f}"
                      "  (single-step budget: not a target)")
                continue
            misses += not ok
            print(f"    {'PASS' if ok else 'MISS'}  {r.config:<13} {r.best_us:8.3f} us  ratio {ratio:.2f}")
    return misses


def profile_rows(args):
    import cProfile
    import io
    import pstats
    for fn in (bthread_start_join, butex_round_trip, bthread_yield_alone):
        for label, cfg in BRPC_CONFIGS:
            if args.filter and args.filter not in f"{fn.__name__} {label}":
                continue
            prof = cProfile.Profile()
            fn(cfg, args.iterations, 1, args.warmup, profiler=prof)
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.profile_lines)
            print(f"\n===== cProfile {fn.__name__} [{label}], {args.iterations} iterations =====")
            print(s.getvalue())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke: each benchmark once, few iterations")
    p.add_argument("--check", action="store_true", help="exit with status 1 if a target is missed")
    p.add_argument("--iterations", "-n", type=int, default=None, help="operations per timed loop (20000)")
    p.add_argument("--repeats", "-r", type=int, default=None, help="timed loops per figure; the best counts (5)")
    p.add_argument("--row-budget", type=float, default=2.0,
                   help="seconds one figure may take; slower rows get fewer iterations (2.0)")
    p.add_argument("--min-iterations", type=int, default=3000, help="floor for that scaling (3000)")
    p.add_argument("--filter", "-k", default="", help="only rows whose name or config contains this text")
    p.add_argument("--profile", action="store_true", help="profile the brpc_mini rows with cProfile instead")
    p.add_argument("--profile-lines", type=int, default=25, help="functions per profile (25)")
    p.add_argument("--verbose", "-v", action="store_true", help="report each figure on stderr as it is taken")
    p.add_argument("--json", metavar="PATH", help="also write every figure (ns per operation) to PATH as JSON")
    args = p.parse_args(argv)
    if args.iterations is None:
        args.iterations = 500 if args.quick else 20_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    args.warmup = 50 if args.quick else 500
    if args.iterations < 1 or args.repeats < 1:
        p.error("--iterations and --repeats must be >= 1")

    if args.profile:
        profile_rows(args)
        return 0
    t0 = time.perf_counter()
    rows = run_all(args)
    print_table(rows, args)
    misses = judge(rows)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump([{"benchmark": r.name, "config": r.config, "iterations": r.n, "ref": r.ref,
                        "samples_ns": r.samples, "best_us": r.best_us} for r in rows], f, indent=1)
    print(f"\n{len(rows)} figures in {time.perf_counter() - t0:.1f} s; "
          f"{misses} target miss{'es' if misses != 1 else ''}"
          f"{' (--check: exit 1)' if args.check and misses else ''}")
    return 1 if (args.check and misses) else 0


if __name__ == "__main__":
    sys.exit(main())
