"""draw_runtime: the scheduler's state — TaskControl, TaskGroups, their queues, TaskMetas, butexes.

brpc: src/bthread/task_control.cpp, src/bthread/task_group.cpp, src/bthread/task_meta.h,
src/bthread/butex.cpp (the seed's step 5 and 6: which tids wait in which queue, what each worker
runs, and who is blocked on which ``version_butex``)

What is drawn, left to right:

* the non-worker threads (the seed's ``main``, made with ``rt.start_pthread``), and what they
  wait on;
* the TaskControl and its TaskGroups; for each group what it runs (a bthread, or its main task:
  ``run_main_task`` looking for work, or idle because its last look found none), its ``_rq``
  (oldest at the top, where thieves steal; newest at the bottom, where the owner pops) and its
  ``_remote_rq`` (head first, where it is popped);
* every live TaskMeta: tid (``version << 32 | slot``), function, stack (empty until the first
  run, then a greenlet) and state (queued, running, waiting on a butex, sleeping);
* each TaskMeta's ``version_butex`` with its value and waiters, plus any other butex a live
  thread waits on.

Nothing here changes the runtime; it only reads it (private fields included: this is the
X-ray). Labels are stable (``b3``, ``TaskGroup 2``, butex numbers), so the same state gives the
same DOT text.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

from ..bthread.butex import ButexBthreadWaiter, ButexPthreadWaiter
from ..bthread.task_meta import get_slot, get_version
from .butex import butex_label, butex_owner, butex_title
from .picture import Dot, Picture, cell, header, kv, table, text

#: queue entries drawn per queue; the rest are counted
MAX_QUEUE_CELLS = 8

_SIMPLE = (int, float, str, bool, type(None))


def fn_label(meta) -> str:
    """``sender(0)``: the function's name and its arguments when they print stably."""
    args = meta.args
    if all(isinstance(a, _SIMPLE) for a in args) and len(args) <= 4:
        shown = ", ".join(repr(a) for a in args)
        if len(shown) <= 40:
            return f"{meta.name}({shown})"
    return f"{meta.name}(...)" if args else f"{meta.name}()"


def tid_text(tid: int) -> str:
    return f"0x{tid:x} (version {get_version(tid)}, slot {get_slot(tid)})"


def pthread_waiter(p):
    """The ButexPthreadWaiter a simulated pthread is blocked with, read from its greenlet's frames."""
    gl = p.greenlet
    f = gl.gr_frame if gl is not None and not gl.dead else None
    while f is not None:
        for value in f.f_locals.values():
            if isinstance(value, ButexPthreadWaiter) and value.container is not None:
                return value
        f = f.f_back
    return None


def _queue_positions(tc, rt):
    """seq -> (group, queue name) for every queued tid."""
    where = {}
    for g in tc._groups:
        for name, q in (("_rq", g._rq), ("_remote_rq", g._remote_rq)):
            for tid in list(q):
                meta = rt.address_meta(tid)
                if meta is not None:
                    where.setdefault(meta.seq, (g, name))
    return where


def meta_state(meta, running_on, queued_in, rt) -> str:
    """queued in g1._rq / running on TaskGroup 2 / waiting on Butex 7 (...) / sleeping / ..."""
    if running_on is not None:
        return f"running on {running_on.label}"
    if queued_in is not None:
        g, name = queued_in
        return f"queued in g{g.index + 1}.{name}"
    w = meta.current_waiter
    if w is not None and w.container is not None:
        return f"waiting on {butex_title(w.container)} ({butex_owner(w.container, rt)})"
    if meta.current_sleep:
        return "sleeping (a TimerThread task will wake it)"
    if meta.stack is None:
        return "not started"
    return "suspended"


def _group_label(g, rt):
    cur = g._cur_meta
    if not cur.is_main:
        running = f"b{cur.seq}"
    elif g.parked:
        running = "main task: idle (its last look for work found none)"
    else:
        running = "main task (run_main_task)"
    rows = [header(g.label, bgcolor="#c8e6c9"), kv("running", running, port="cur")]
    for name, q, ends in (("_rq", g._rq, ("top: thieves steal", "bottom: owner pops")),
                          ("_remote_rq", g._remote_rq, ("head: popped first", "tail: pushed last"))):
        tids = list(q)
        if not tids:
            rows.append(kv(name, "(empty)"))
            continue
        cells = []
        for i, tid in enumerate(tids[:MAX_QUEUE_CELLS]):
            meta = rt.address_meta(tid)
            label = f"b{meta.seq}" if meta is not None else f"0x{tid:x}"
            cells.append(cell(text(label, bold=True), port=f"{name.strip('_')}{i}", bgcolor="#ffffff",
                              align="CENTER"))
        if len(tids) > MAX_QUEUE_CELLS:
            cells.append(cell(text(f"+{len(tids) - MAX_QUEUE_CELLS} more", size=8), align="CENTER"))
        inner = ('<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="2" CELLPADDING="2"><TR>' + "".join(cells)
                 + "</TR></TABLE>")
        key = text(name, size=9, color="#555555") + "<BR/>" + text(f"{ends[0]} ... {ends[1]}", size=7,
                                                                     color="#777777")
        rows.append([cell(key), cell(inner)])
    remained = g._last_context_remained
    if remained is not None:
        rows.append(kv("remained", getattr(remained[0], "__name__", "callback")))
    return table(rows, bgcolor="#f1f8f1")


def _meta_label(meta, state):
    vb = meta.version_butex
    rows = [header(f"TaskMeta b{meta.seq}", bgcolor="#bbdefb", subtitle=f"bthread {meta.seq}"),
            kv("tid", tid_text(meta.tid)),
            kv("fn", fn_label(meta)),
            kv("stack", "empty (not started)" if meta.stack is None else "greenlet"),
            kv("state", state),
            kv("version_butex", f"{butex_title(vb)}, value {vb.value}", port="vb")]
    return table(rows, bgcolor="#f5f9ff")


def draw_runtime(rt, title: str | None = None) -> Picture:
    """Draw ``rt``'s TaskControl, TaskGroups, queues, live TaskMetas and their butexes.

    Before the first start (``rt.task_control is None``) it draws the empty world and says why.
    Deterministic mode gives a reproducible picture; in threads mode the workers keep running
    while it reads, so the picture is a best-effort snapshot.
    """
    dot = Dot("runtime", title, extra="newrank=true")
    tc = rt.task_control

    # non-worker threads (simulated pthreads: the seed's main)
    pthreads = [p for p in getattr(rt, "_pthreads", []) if not p.done]
    pthread_waits = []
    if pthreads:
        dot.add('subgraph cluster_nonworkers { label=<non-worker threads>; style="rounded,dashed"; '
                'color="#90a4ae"; fontsize=10;')
        for i, p in enumerate(pthreads):
            w = pthread_waiter(p)
            if not p.started:
                state = "not started"
            elif w is not None:
                state = f"blocked: waits on {butex_title(w.container)} ({butex_owner(w.container, rt)})"
                pthread_waits.append((f"pthread{i + 1}", w))
            elif p.wait_pred is not None:
                state = "blocked"
            else:
                state = "runnable"
            rows = [header(f"pthread {p.name}", bgcolor="#bbdefb", subtitle="a plain thread, not a worker"),
                    kv("state", state)]
            dot.node(f"pthread{i + 1}", table(rows, bgcolor="#f5f9ff"), indent=2)
        dot.add("}")

    if tc is None:
        rows = [header("no TaskControl yet", bgcolor="#eeeeee"),
                kv("rt.task_control", "None"),
                kv("concurrency", f"{rt.concurrency} (TaskGroups to make)"),
                kv("mode", rt.mode),
                kv("made by", "the first bthread_start_* from a non-worker:\n"
                              "start_from_non_worker -> get_or_new_task_control")]
        dot.node("task_control", table(rows, bgcolor="#fafafa"))
        return Picture(dot.source())

    metas = rt.live_bthreads()
    queued = _queue_positions(tc, rt)
    running = {}
    for g in tc._groups:
        cur = g._cur_meta
        if not cur.is_main:
            running[cur.seq] = g

    tt = rt.timer_thread
    rows = [header("TaskControl", bgcolor="#b2dfdb"),
            kv("_groups", f"{len(tc._groups)} TaskGroups"),
            kv("bthreads", f"{len(metas)} live, {rt.nbthread_created} created"),
            kv("TimerThread", f"{tt.nscheduled if tt is not None else 0} task(s) scheduled"),
            kv("mode", rt.mode + ("" if rt.threads_mode else f", seed {rt.seed}"))]
    dot.node("task_control", table(rows, bgcolor="#f0faf9"))

    group_nodes = []
    for g in tc._groups:
        name = f"g{g.index + 1}"
        group_nodes.append(name)
        dot.node(name, _group_label(g, rt))
        dot.edge("task_control", name, color="#78909c")

    drawn_butexes = {}
    for m in metas:
        node = f"b{m.seq}"
        dot.node(node, _meta_label(m, meta_state(m, running.get(m.seq), queued.get(m.seq), rt)))
        drawn_butexes[id(m.version_butex)] = m.version_butex

    # butexes that live threads wait on but that are no live TaskMeta's version_butex
    extra = {}
    for m in metas:
        w = m.current_waiter
        if w is not None and w.container is not None and id(w.container) not in drawn_butexes:
            extra[id(w.container)] = w.container
    for _, w in pthread_waits:
        if id(w.container) not in drawn_butexes:
            extra[id(w.container)] = w.container
    butexes = [m.version_butex for m in metas] + sorted(extra.values(), key=lambda b: b.number)

    for b in butexes:
        dot.node(f"butex{b.number}", butex_label(b, rt, port_prefix="w"))
    for m in metas:
        dot.edge(f"b{m.seq}:vb", f"butex{m.version_butex.number}", label="version_butex", color="#8d6e63")

    # who runs what, who waits where
    for g in tc._groups:
        cur = g._cur_meta
        if not cur.is_main and cur.seq in {m.seq for m in metas}:
            dot.edge(f"g{g.index + 1}:cur", f"b{cur.seq}", label="_cur_meta", penwidth=2, color="#2e7d32")
        for qname, q in (("_rq", g._rq), ("_remote_rq", g._remote_rq)):
            for i, tid in enumerate(list(q)[:MAX_QUEUE_CELLS]):
                meta = rt.address_meta(tid)
                if meta is not None and meta.fn is not None:
                    dot.edge(f"g{g.index + 1}:{qname.strip('_')}{i}", f"b{meta.seq}", style="dashed",
                             color="#1565c0")
    for b in butexes:
        for i, w in enumerate(list(b.waiters)):
            if isinstance(w, ButexBthreadWaiter) and w.task_meta.fn is not None:
                dot.edge(f"b{w.task_meta.seq}", f"butex{b.number}:w{i}", label="waits",
                         color="#c62828", fontcolor="#c62828", constraint=False)
    for node, w in pthread_waits:
        b = w.container
        index = list(b.waiters).index(w) if w in b.waiters else None
        head = f"butex{b.number}" + (f":w{index}" if index is not None else "")
        dot.edge(node, head, label="waits (ButexPthreadWaiter)", color="#c62828", fontcolor="#c62828",
                 constraint=False)

    # columns, left to right: threads that are not workers and TaskControl | groups | TaskMetas |
    # butexes; each column in a fixed order (invisible edges), so that similar states look alike
    _column(dot, ["task_control"] + [f"pthread{i + 1}" for i in range(len(pthreads))])
    _column(dot, group_nodes)
    _column(dot, [f"b{m.seq}" for m in metas])
    _column(dot, [f"butex{b.number}" for b in butexes])
    return Picture(dot.source())


def _column(dot, nodes) -> None:
    if not nodes:
        return
    dot.add("{ rank=same; " + "; ".join(nodes) + "; }")
    if len(nodes) > 1:
        dot.add(" -> ".join(nodes) + " [style=invis];")


__all__ = ["draw_runtime", "fn_label", "meta_state", "pthread_waiter", "tid_text"]
