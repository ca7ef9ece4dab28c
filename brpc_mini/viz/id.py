"""draw_id: a bthread_id's version line, its lock state, its waiters and its pending errors.

brpc: src/bthread/id.cpp (Id, bthread_id_lock_and_reset_range, bthread_id_unlock,
bthread_id_error2, bthread_id_join)

The picture puts the Id's versions on a line: ``[first_ver, locked_ver)`` are the valid ones (an
RPC's call_id, its first try, its retries), then the three values that are not versions but lock
states — ``locked_ver``, ``contended_ver`` (+1), ``unlockable_ver`` (+2) — then ``end_ver``
(+3), the next generation's ``first_ver``. The butex value is marked on that line: that one
integer *is* the lock state (``Id.state()``). Below: the lockers waiting on the butex, the
joiners on ``join_butex``, the errors queued in ``pending_q`` while the Id was locked, and the
data (the Controller, for an RPC).

Explained in: notebooks/03_id.ipynb
"""
from __future__ import annotations

import errno as _errno

from ..bthread.id import Id, address_id
from ..bthread.id import get_slot as id_slot
from ..bthread.id import get_version as id_version
from .butex import butex_title, waiter_line
from .picture import Dot, Picture, cell, header, kv, table, text

#: valid versions drawn before eliding the middle of a wide range
MAX_VERSION_CELLS = 8

_CODE_NAMES = None


def error_name(code: int) -> str:
    """``ERPCTIMEDOUT``, ``ECANCELED``, ``ESTOP``... or the number itself."""
    global _CODE_NAMES
    if _CODE_NAMES is None:
        names = dict(_errno.errorcode)
        names[_errno.EAGAIN] = "EAGAIN"
        names[-20] = "ESTOP"
        try:
            from ..rpc import errors as rpc_errors
            for k, v in vars(rpc_errors).items():
                if k.startswith("E") and k.isupper() and isinstance(v, int) and v >= 1000:
                    names[v] = k
        except Exception:  # the picture does not need the RPC layer to be importable
            pass
        _CODE_NAMES = names
    return _CODE_NAMES.get(code, str(code))


def data_label(data) -> str:
    """A stable label for an Id's data: plain values as they are, objects by their type."""
    if data is None or isinstance(data, (int, float, bool)):
        return repr(data)
    if isinstance(data, str):
        return repr(data) if len(data) <= 40 else repr(data[:37] + "...")
    label = getattr(data, "label", None)
    if isinstance(label, str):
        return f"{type(data).__name__} {label}"
    return f"a {type(data).__name__}"


def _callback_name(meta: Id) -> str:
    fn = meta.on_error2 or meta.on_error
    if fn is None:
        return "None"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return name + ("  (on_error2: gets the text)" if meta.on_error2 is not None else "")


def _version_cells(meta: Id, mine: int):
    """(version, caption) pairs along the line, with None for an elided stretch."""
    first, locked = meta.first_ver, meta.locked_ver
    valid = list(range(first, locked))
    if len(valid) > MAX_VERSION_CELLS:
        valid = valid[:4] + [None] + valid[-3:]
    cells = [(v, "valid" if v is not None else "") for v in valid]
    cells += [(locked, "locked_ver"), (locked + 1, "contended_ver"), (locked + 2, "unlockable_ver"),
              (locked + 3, "end_ver")]
    if mine not in [v for v, _ in cells] and first <= mine <= locked + 3:
        # the id's own version fell into the elided stretch: show it
        cells = [c for c in cells if c[0] is None or c[0] < mine] + [(mine, "valid")] + \
                [c for c in cells if c[0] is not None and c[0] > mine]
    return cells


def _version_line(meta: Id, mine: int) -> str:
    value = meta.butex.value
    top, bottom = [], []
    if meta.first_ver == meta.locked_ver:
        # destroyed: every version below first_ver is dead; first_ver is where the next create starts
        cells = [(None, f"< {meta.first_ver}: dead"), (meta.first_ver, "next first_ver")]
    else:
        cells = _version_cells(meta, mine)
    for v, caption in cells:
        if v is None and caption:
            top.append(cell(text(f"... {meta.first_ver - 1}", size=9), bgcolor="#eeeeee", align="CENTER"))
            note = f"\nthis id ({mine})" if mine < meta.first_ver else ""
            bottom.append(cell(text("dead versions" + note, size=8, color="#b71c1c" if note else "#555555"),
                               align="CENTER", border=0))
            continue
        if v is None:
            top.append(cell(text("...", size=9), align="CENTER", border=0))
            bottom.append(cell("", border=0))
            continue
        notes = []
        if v == mine:
            notes.append("this id")
        if v == value:
            notes.append("butex")
        color = "#ffcc80" if v == value else ("#e8f5e9" if caption == "valid" else "#eeeeee")
        content = text(v, bold=(v == mine))
        top.append(cell(content, bgcolor=color, align="CENTER", port=f"v{v}"))
        bottom.append(cell(text(caption + ("\n" + ", ".join(notes) if notes else ""), size=8,
                                color="#b71c1c" if notes else "#555555"), align="CENTER", border=0))
    return ('<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
            f'<TR>{"".join(top)}</TR><TR>{"".join(bottom)}</TR></TABLE>')


def draw_id(id_value: int, rt=None, title: str | None = None) -> Picture:
    """Draw the Id behind ``id_value`` (a bthread_id_t / correlation id).

    ``rt`` defaults to the current runtime (``address_id``). Works for a live Id, one whose
    version is no longer valid (destroyed, or the slot reused), and one never made (a note).
    """
    if not isinstance(id_value, int) or isinstance(id_value, bool):
        raise TypeError(f"id_value must be an int (a bthread_id_t value), got {type(id_value).__name__}")
    if rt is not None:
        meta = rt.ids.address(id_value) if rt.ids is not None else None
    else:
        meta = address_id(id_value)
    slot, mine = id_slot(id_value), id_version(id_value)
    dot = Dot("bthread_id", title)
    if meta is None:
        rows = [header(f"Id 0x{id_value:x}", bgcolor="#f8bbd0"),
                kv("slot", f"{slot}: no Id was ever made in this slot")]
        dot.node("id", table(rows, bgcolor="#fff5f8"))
        return Picture(dot.source())
    state = meta.state()
    valid = meta.has_version(mine)
    rows = [header(f"Id 0x{id_value:x}", bgcolor="#f8bbd0",
                   subtitle=f"slot {slot}, version {mine}: "
                            + ("valid" if valid else "not valid (calls on it return EINVAL)")),
            [cell(text("versions", size=9, color="#555555")), cell(_version_line(meta, mine))],
            kv("first_ver, locked_ver", f"{meta.first_ver}, {meta.locked_ver}  "
                                        f"(valid: [{meta.first_ver}, {meta.locked_ver}))"
               if state != "destroyed" else f"{meta.first_ver}, {meta.locked_ver}  (destroyed: no valid version)"),
            kv("butex", f"{butex_title(meta.butex)}, value {meta.butex.value}: {state}",
               value_color="#ffe0b2")]
    lockers = list(meta.butex.waiters)
    rows.append(kv("lock waiters", "\n".join(f"{i + 1}. {waiter_line(w)}" for i, w in enumerate(lockers))
                   if lockers else "(none)"))
    joiners = list(meta.join_butex.waiters)
    rows.append(kv("join_butex", f"{butex_title(meta.join_butex)}, value {meta.join_butex.value}"))
    rows.append(kv("join waiters", "\n".join(f"{i + 1}. {waiter_line(w)}" for i, w in enumerate(joiners))
                   if joiners else "(none)"))
    pending = list(meta.pending_q)
    if pending:
        lines = []
        for i, p in enumerate(pending):
            line = f"{i + 1}. id 0x{p.id:x} (version {id_version(p.id)}): {error_name(p.error_code)}"
            if p.error_text:
                line += f' "{p.error_text}"'
            lines.append(line)
        rows.append(kv("pending_q", "\n".join(lines), value_color="#ffebee"))
    else:
        rows.append(kv("pending_q", "(empty)"))
    rows.append(kv("data", data_label(meta.data)))
    rows.append(kv("on_error", _callback_name(meta)))
    dot.node("id", table(rows, bgcolor="#fff5f8"))
    return Picture(dot.source())


__all__ = ["draw_id", "data_label", "error_name"]
