"""draw_butex: a butex's value and its waiters, in queue order.

brpc: src/bthread/butex.cpp (Butex, ButexBthreadWaiter, ButexPthreadWaiter)

A butex is a word plus a list of waiters. A waiter is either a **ButexBthreadWaiter** (a bthread
that switched out; the record lives on its own stack, with the value it expected and its state:
READY, TIMEDOUT, UNMATCHEDVALUE, INTERRUPTED) or a **ButexPthreadWaiter** (a plain thread such as
the program's ``main``, sleeping on its private ``sig`` word). The picture lists them in the order
``butex_wake`` would take them, and names the butex's owner: which TaskMeta's ``version_butex``,
which Id's ``butex`` or ``join_butex``.

Explained in: notebooks/01_scheduler.ipynb, notebooks/02_butex.ipynb
"""
from __future__ import annotations

from ..bthread.butex import WAITER_STATE_NAMES, Butex, ButexBthreadWaiter, ButexPthreadWaiter
from ..bthread.context import current_runtime
from .picture import Dot, Picture, cell, header, table, text

_SIG_NAMES = {0: "NOT_SIGNALLED", 1: "SIGNALLED"}


def butex_title(b: Butex) -> str:
    """``Butex 7``: the runtime's creation number of the butex, a stable label."""
    return f"Butex {b.number}"


def butex_owner(b: Butex, rt=None) -> str:
    """Who owns ``b``: ``version_butex of b3``, ``butex of Id (slot 0)``, or its ``owner`` label."""
    if rt is not None:
        for m in rt._metas:
            if m.version_butex is b:
                if m.fn is not None:
                    return f"version_butex of b{m.seq}"
                return f"version_butex of TaskMeta slot {m.slot} (free; last held b{m.seq})"
        ids = rt.ids
        if ids is not None:
            for i in ids.ids:
                if i.butex is b:
                    return f"butex of Id slot {i.slot}"
                if i.join_butex is b:
                    return f"join_butex of Id slot {i.slot}"
    return b.owner or "a butex"


def waiter_who(w) -> str:
    """``b3`` for a bthread waiter, ``pthread main`` for a plain thread's."""
    if isinstance(w, ButexBthreadWaiter):
        return f"b{w.task_meta.seq}"
    if isinstance(w, ButexPthreadWaiter):
        return f"pthread {w.name}"
    return type(w).__name__


def waiter_row(w) -> tuple:
    """(kind, who, expected value, state) of a waiter, as text."""
    if isinstance(w, ButexBthreadWaiter):
        state = WAITER_STATE_NAMES.get(w.waiter_state, str(w.waiter_state))
        if w.abstime is not None:
            state += ", with timeout"
        return "ButexBthreadWaiter", waiter_who(w), str(w.expected_value), state
    if isinstance(w, ButexPthreadWaiter):
        return ("ButexPthreadWaiter", waiter_who(w), "-",
                f"sig={w.sig} ({_SIG_NAMES.get(w.sig, '?')})")
    return type(w).__name__, "?", "-", "-"


def waiter_line(w) -> str:
    """One line: ``ButexBthreadWaiter b1, expected 1, READY``."""
    kind, who, expected, state = waiter_row(w)
    if expected == "-":
        return f"{kind} of {who}, {state}"
    return f"{kind} of {who}, expected {expected}, {state}"


def _runtime_of(butexes, rt):
    if rt is not None:
        return rt
    for b in butexes:
        for w in list(b.waiters):
            if isinstance(w, ButexBthreadWaiter):
                return w.task_meta.runtime
    return current_runtime(create=False)


def butex_label(b: Butex, rt=None, port_prefix: str | None = None) -> str:
    """The HTML-like table of one butex (used by draw_butex and draw_runtime)."""
    waiters = list(b.waiters)
    rows = [header(butex_title(b), colspan=5, bgcolor="#ffe0b2", subtitle=butex_owner(b, rt)),
            [cell(text("value", size=9, color="#555555")),
             cell(text(b.value, bold=True), colspan=4)]]
    if not waiters:
        rows.append([cell(text("waiters", size=9, color="#555555")),
                     cell(text("(none)", size=9, italic=True), colspan=4)])
    else:
        rows.append([cell(text(h, size=8, color="#555555")) for h in
                     ("waiters", "kind", "who", "expected", "state")])
        for i, w in enumerate(waiters):
            kind, who, expected, state = waiter_row(w)
            port = f"{port_prefix}{i}" if port_prefix else None
            color = "#e3f2fd" if isinstance(w, ButexPthreadWaiter) else "#f1f8e9"
            rows.append([cell(text(i + 1, size=9), align="RIGHT"), cell(text(kind, size=9), bgcolor=color),
                         cell(text(who, size=9, bold=True), port=port), cell(text(expected, size=9)),
                         cell(text(state, size=9))])
    return table(rows, bgcolor="#fff8ee")


def draw_butex(*butexes: Butex, rt=None, title: str | None = None) -> Picture:
    """Draw each butex: its value, its waiters in wake order (kind, who, expected value, state)
    and its owner.

    ``rt`` (default: the runtime of a bthread waiter, else the current one) is only used to name
    owners: which TaskMeta's ``version_butex``, which Id's ``butex``/``join_butex``.
    """
    for b in butexes:
        if not isinstance(b, Butex):
            raise TypeError(f"draw_butex takes Butex objects, got {type(b).__name__}")
    if not butexes:
        raise ValueError("draw_butex needs at least one Butex")
    rt = _runtime_of(butexes, rt)
    dot = Dot("butex", title)
    for b in butexes:
        dot.node(f"butex{b.number}", butex_label(b, rt))
    return Picture(dot.source())


__all__ = ["draw_butex", "butex_label", "butex_owner", "butex_title", "waiter_line", "waiter_row",
           "waiter_who"]
