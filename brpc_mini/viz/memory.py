"""The seed's memory-layout figures, drawn from a live runtime.

brpc: none (the seed's figures at step 6 and step 11, client_send_req_1.png / _2.png).

Three regions, as in the seed:

* **main's stack** — the frames of the program's main thread (a pthread simulated by
  ``rt.start_pthread``), the Channel it holds and, while it joins, its ButexPthreadWaiter;
* **the heap** — TaskControl, the TaskGroups and their queues, the TaskMetas with their
  ``version_butex``, the RPCs' Ids and their butexes, the Socket;
* **each bthread's stack** — read from its suspended greenlet's frames (``gr_frame`` and
  ``f_back``), with the objects its frames hold: Controller, request, response, and while it waits,
  its ButexBthreadWaiter. Nothing here is invented: a frame that is not on the greenlet is not
  drawn.

Python note: every Python object lives on the heap; what C++ puts on a bthread's stack appears
here as the objects that the frames of that bthread's greenlet own (the outermost frame that
refers to an object claims it).

Explained in: notebooks/07_walkthrough.ipynb
"""
from __future__ import annotations

from html import escape

from google.protobuf.message import Message

from ..bthread.butex import WAITER_STATE_NAMES, Butex, ButexBthreadWaiter, ButexPthreadWaiter
from .picture import Dot, Picture, header, kv, table, text

#: runtime frames that say nothing about the story; they are listed but their locals are not read
_PLUMBING = {"sched", "sched_to", "_sim_block", "_pthread_wait", "_body", "run_main_task", "switch"}


def _table(title, rows, color="#ffffff"):
    """A titled two-column table label, from ``(key, value)`` rows."""
    return table([header(title, bgcolor="#e8e8e8")] + [kv(k, v) for k, v in rows], bgcolor=color)


class _Dot(Dot):
    """A Dot that also hands out stable node names in first-seen order."""

    def __init__(self, title):
        super().__init__("memory", title, extra="compound=true, newrank=true")
        self.names = {}

    def name(self, obj, prefix):
        key = id(obj)
        if key not in self.names:
            self.names[key] = f"{prefix}{len(self.names) + 1}"
        return self.names[key]


def _message_text(msg: Message) -> str:
    fields = ", ".join(f'{f.name}: "{v}"' if isinstance(v, str) else f"{f.name}: {v}"
                       for f, v in msg.ListFields())
    return f"{type(msg).__name__} {{{fields}}}"


def _object_label(obj):
    """(kind, one-line description) of an object worth drawing, or None."""
    from ..rpc.channel import Channel
    from ..rpc.controller import Controller
    if isinstance(obj, Controller):
        cid = obj._correlation_id
        return "Controller", (f"call_id=0x{cid:x}, nretry={obj._current_call.nretry}, "
                              f"timeout_ms={obj._timeout_ms}" if cid else "call_id not made yet")
    if isinstance(obj, Channel):
        return "Channel", ("single server" if obj.SingleServer() else "load balancer")
    if isinstance(obj, Message):
        return type(obj).__name__, _message_text(obj)
    if isinstance(obj, ButexBthreadWaiter):
        return "ButexBthreadWaiter", (f"tid=0x{obj.tid:x}, expected={obj.expected_value}, "
                                      f"state={WAITER_STATE_NAMES[obj.waiter_state]}")
    if isinstance(obj, ButexPthreadWaiter):
        return "ButexPthreadWaiter", f"tid=0 ({obj.name}), sig={obj.sig}"
    from ..rpc.socket import WriteRequest
    if isinstance(obj, WriteRequest):
        return "WriteRequest", (f"{len(obj.data)} bytes left, id_wait=0x{obj.id_wait:x}, "
                                f"next: {'null' if obj.next is None else 'a WriteRequest'}")
    return None


def _frames(gl):
    """Frames of a suspended greenlet, outermost first."""
    frames = []
    f = gl.gr_frame if gl is not None else None
    while f is not None:
        frames.append(f)
        f = f.f_back
    return list(reversed(frames))


def _butex_label(b: Butex) -> str:
    return b.owner or f"Butex {b.number}"


def _stack_cluster(dot, cluster, title, gl, claimed, waits, color):
    """Add a cluster listing ``gl``'s frames and the objects they own; returns the first node."""
    dot.add(f'subgraph cluster_{cluster} {{ label="{escape(title)}"; style="rounded,filled"; '
            f'fillcolor="{color}"; color="#888888";')
    frames = _frames(gl)
    if not frames:
        node = f"{cluster}_empty"
        dot.add(f'  {node} [label=<{text("empty: not started, no frames yet", italic=True)}>];')
        dot.add("}")
        return node
    rows = []
    objects = []
    for f in frames:
        name = f.f_code.co_name
        rows.append(("frame", f"{name}()"))
        if name in _PLUMBING:
            continue
        for var, value in f.f_locals.items():
            described = _object_label(value)
            if described is None or id(value) in claimed:
                continue
            claimed.add(id(value))
            objects.append((name, var, value, described))
    first = f"{cluster}_frames"
    dot.add(f"  {first} [label={_table('frames (outermost first)', rows, '#ffffff')}];")
    for fname, var, value, (kind, description) in objects:
        node = dot.name(value, "obj")
        dot.add(f'  {node} [label={_table(kind, [("in " + fname + "()", var), ("value", description)], "#fffbe6")}];')
        if isinstance(value, (ButexBthreadWaiter, ButexPthreadWaiter)) and value.container is not None:
            waits.append((node, value.container))
        from ..rpc.controller import Controller
        if isinstance(value, Controller) and value._correlation_id:
            waits.append((node, ("id", value._correlation_id)))
    dot.add("}")
    return first


def memory_layout_dot(rt, pthreads=(), title: str = "", show_ids: bool = True, show_sockets: bool = True) -> str:
    """DOT source of the memory layout of ``rt`` (and of the given PthreadHandles' stacks)."""
    dot = _Dot(title)
    claimed = set()
    waits = []
    # main's stack (and any other simulated pthreads)
    for p in pthreads:
        if p.done:
            continue
        _stack_cluster(dot, f"pthread_{escape(p.name)}", f"{p.name}'s stack (pthread)", p.greenlet,
                       claimed, waits, "#eef5ff")
    # the heap
    dot.add('subgraph cluster_heap { label="heap"; style="rounded,filled"; fillcolor="#f7f7f7"; color="#888888";')
    tc = rt.task_control
    metas = rt.live_bthreads()
    butex_nodes = {}
    if tc is None:
        dot.add(f'  no_tc [label=<{text("no TaskControl yet", italic=True)}>];')
    else:
        dot.add(f"  task_control [label={_table('TaskControl', [('_groups', str(len(tc._groups))), ('TimerThread', 'pending: %d' % rt.timer_thread.nscheduled)], '#e3f2fd')}];")
        for g in tc._groups:
            cur = g._cur_meta
            rows = [("running", "main task (parked)" if cur.is_main and g.parked else
                     ("main task" if cur.is_main else f"b{cur.seq}")),
                    ("_rq", " ".join(f"b{rt.address_meta(t).seq}" for t in g._rq) or "(empty)"),
                    ("_remote_rq", " ".join(f"b{rt.address_meta(t).seq}" for t in g._remote_rq) or "(empty)")]
            dot.add(f"  group{g.index + 1} [label={_table(g.label, rows, '#e8f5e9')}];")
            dot.add(f"  task_control -> group{g.index + 1} [arrowsize=0.6];")
        for m in metas:
            state = ("not started" if m.stack is None else
                     "waiting" if m.current_waiter is not None else
                     "sleeping" if m.current_sleep else "runnable")
            rows = [("tid", f"0x{m.tid:x} (version {m.tid >> 32}, slot {m.tid & 0xFFFFFFFF})"),
                    ("fn", m.name), ("state", state),
                    ("stack", "none yet" if m.stack is None else "a greenlet")]
            node = f"meta{m.seq}"
            dot.add(f"  {node} [label={_table('TaskMeta b%d' % m.seq, rows, '#ffffff')}];")
            vb = m.version_butex
            bnode = f"vbutex{m.seq}"
            butex_nodes[id(vb)] = bnode
            dot.add(f"  {bnode} [label={_table('Butex (version_butex)', [('value', str(vb.value)), ('waiters', str(len(vb.waiters)))], '#fff3e0')}];")
            dot.add(f"  {node} -> {bnode} [label=\"version_butex\", arrowsize=0.6];")
        for g in tc._groups:
            for where, queue in (("_rq", g._rq), ("_remote_rq", g._remote_rq)):
                for t in queue:
                    m = rt.address_meta(t)
                    dot.add(f'  group{g.index + 1} -> meta{m.seq} [style=dashed, label="{where}", arrowsize=0.6];')
    id_nodes = {}
    if show_ids and rt.ids is not None:
        for idobj in rt.ids.live():
            node = f"id{idobj.slot}"
            id_nodes[idobj.slot] = node
            rows = [("valid versions", f"[{idobj.first_ver}, {idobj.locked_ver})"),
                    ("butex", f"{idobj.butex.value} ({idobj.state()})"),
                    ("join_butex", f"{idobj.join_butex.value}, {len(idobj.join_butex.waiters)} waiter(s)"),
                    ("pending_q", str(len(idobj.pending_q)))]
            dot.add(f"  {node} [label={_table('Id (slot %d)' % idobj.slot, rows, '#fce4ec')}];")
            butex_nodes[id(idobj.butex)] = node
            butex_nodes[id(idobj.join_butex)] = node
    if show_sockets:  # the client's connections and the dispatchers
        state = getattr(rt, "_rpc", None)
        if state is not None:
            for s in state.sockets:
                if s is None or not s._in_use or s._epollout_request is not None or s.user is None:
                    continue
                if getattr(s.user, "server", None) is not None or s.created_by_connect is False:
                    continue
                queued, left, req = 0, 0, s._write_head
                while req is not None:          # newest first, down to the one being written
                    queued, left, req = queued + 1, left + len(req.data), req.next
                rows = [("fd", "connected" if s.fd is not None else "not connected"),
                        ("_write_head", "null" if not queued else
                         f"{queued} WriteRequest{'s' if queued > 1 else ''}, {left} bytes to write"),
                        ("_id_wait_list", str(len(s._id_wait_list)))]
                dot.add(f"  socket{s.slot} [label={_table(s.label, rows, '#ede7f6')}];")
            for i, d in enumerate(state.dispatchers):
                dot.add(f"  dispatcher{i + 1} [label={_table(d.label, [('fds', str(d.consumer_count())), ('bthread', 'runs EventDispatcher.Run')], '#ede7f6')}];")
    dot.add("}")
    # stacks of started bthreads
    for m in metas:
        if m.name in ("EventDispatcher.Run",):
            continue   # the dispatchers' stacks hold only their loop
        first = _stack_cluster(dot, f"b{m.seq}", f"bthread {m.seq}'s stack ({m.name})", m.stack,
                               claimed, waits, "#f1f8e9")
        dot.add(f'  meta{m.seq} -> {first} [lhead=cluster_b{m.seq}, style=dotted, label="stack", arrowsize=0.6];')
    for node, target in waits:
        if isinstance(target, tuple):
            slot = target[1] >> 32
            if slot in id_nodes:
                dot.add(f'  {node} -> {id_nodes[slot]} [label="call_id", style=dashed, arrowsize=0.6];')
                # and back: the Id's data is this Controller (bthread_id_create2(&cid, this, ...))
                dot.add(f'  {id_nodes[slot]} -> {node} [label="data", style=dashed, arrowsize=0.6];')
        elif id(target) in butex_nodes:
            dot.add(f'  {node} -> {butex_nodes[id(target)]} [label="waits on {escape(_butex_label(target))}", color="#c62828", arrowsize=0.6];')
    return dot.source()


def memory_layout(rt, pthreads=(), title: str = "", show_ids: bool = True, show_sockets: bool = True) -> Picture:
    """The seed's memory-layout figure for ``rt`` now: main's stack (the given simulated pthreads),
    the heap, and every started bthread's stack read from its greenlet's frames."""
    return Picture(memory_layout_dot(rt, pthreads, title, show_ids, show_sockets))


def locals_of(gl, function_name: str) -> dict:
    """The local variables of the innermost frame of ``function_name`` on a suspended greenlet
    (a bthread's ``meta.stack``, a simulated pthread's ``handle.greenlet``). KeyError if absent."""
    for f in reversed(_frames(gl)):
        if f.f_code.co_name == function_name:
            return dict(f.f_locals)
    raise KeyError(f"no frame of {function_name}() on this stack")
