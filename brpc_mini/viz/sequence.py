"""A sequence diagram of traced events: one column per TaskGroup, time going down.

brpc: none (a picture of the kit's trace). It shows what the seed describes in prose: which
worker ran which bthread at each step, and how one RPC hops from the sender to the dispatcher,
the KeepWrite bthread, the reader and the bthread that wakes the sender.

Explained in: notebooks/06_response_path.ipynb, notebooks/07_walkthrough.ipynb
"""
from __future__ import annotations

from html import escape

#: one colour per bthread number (cycled), so a bthread is easy to follow across columns
_PALETTE = ("#dbe9f6", "#fde2c8", "#d9f0d3", "#f6d5e5", "#e6dcf2", "#fff2b3", "#d0ece7", "#f2dede",
            "#e0e0e0", "#cfe2f3")

#: the kinds worth a row by default (the scheduling skeleton and the RPC checkpoints)
DEFAULT_KINDS = ("create", "run", "suspend", "wake", "end", "steal", "pthread_block", "pthread_wake",
                 "CallMethod", "IssueRPC", "Write", "Join", "connect", "connected", "write", "read",
                 "io", "process_in_place", "ProcessRpcResponse", "EndRPC", "timer_fire", "stale", "retry",
                 "backup_request")


def sequence_dot(events, ngroups: int, kinds=DEFAULT_KINDS, bthreads=None, title: str = "",
                 max_rows: int = 120) -> str:
    """DOT source of the diagram for ``events`` (``TraceEvent``s, e.g. ``rt.trace.since(n)``).

    ``kinds`` limits the rows to those event kinds (None: all); ``bthreads`` to events about those
    bthread numbers (events about no bthread, like ``io`` or ``read``, are kept).
    """
    rows = []
    for ev in events:
        if kinds is not None and ev.kind not in kinds:
            continue
        if bthreads is not None and ev.bthread is not None and ev.bthread not in bthreads:
            continue
        rows.append(ev)
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    lanes = [f"TaskGroup {i + 1}" for i in range(ngroups)] + ["non-worker"]
    header = "".join(f'<TD BGCOLOR="#555555"><FONT COLOR="white"><B>{escape(lane)}</B></FONT></TD>'
                     for lane in lanes)
    body = []
    for ev in rows:
        lane = (ev.group - 1) if ev.group is not None and ev.group <= ngroups else ngroups
        who = f"b{ev.bthread} " if ev.bthread is not None else ""
        detail = f"<BR/><FONT POINT-SIZE=\"9\">{escape(ev.detail)}</FONT>" if ev.detail else ""
        color = _PALETTE[(ev.bthread - 1) % len(_PALETTE)] if ev.bthread is not None else "#ffffff"
        cells = []
        for i in range(len(lanes)):
            if i == lane:
                cells.append(f'<TD BGCOLOR="{color}" ALIGN="LEFT"><B>{escape(who)}{escape(ev.kind)}</B>{detail}</TD>')
            else:
                cells.append("<TD> </TD>")
        body.append(f'<TR><TD ALIGN="RIGHT"><FONT POINT-SIZE="9">{ev.seq}</FONT></TD>{"".join(cells)}</TR>')
    if truncated:
        body.append(f'<TR><TD COLSPAN="{len(lanes) + 1}">... {max_rows} rows shown</TD></TR>')
    label = (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
             f'<TR><TD><B>#</B></TD>{header}</TR>{"".join(body)}</TABLE>>')
    lines = ["digraph sequence {", '  graph [fontname="Helvetica"];',
             '  node [shape=plaintext, fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f'  labelloc="t"; label="{escape(title)}";')
    lines.append(f"  sequence [label={label}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def sequence_diagram(events, ngroups: int = 4, kinds=DEFAULT_KINDS, bthreads=None, title: str = "",
                     max_rows: int = 120):
    """A :class:`~brpc_mini.viz.picture.Picture` of :func:`sequence_dot`: the RPC checkpoints
    (CallMethod, IssueRPC, Write, ProcessRpcResponse, EndRPC...) with the scheduling around them."""
    from .picture import Picture
    return Picture(sequence_dot(list(events), ngroups, kinds=kinds, bthreads=bthreads, title=title,
                                max_rows=max_rows))
