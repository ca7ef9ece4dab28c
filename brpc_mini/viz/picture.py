"""Picture: DOT source that Jupyter shows as an SVG, and a small kit for HTML-like table labels.

brpc: none (the kit's own drawing support).

Every ``draw_*`` function returns a :class:`Picture`. In a notebook it displays as an SVG drawn by
graphviz's ``dot``; its ``text/plain`` form is the DOT source itself. nbval compares both, and
``notebooks/nbval_sanitize.cfg`` blanks the SVG (its coordinates differ between Graphviz builds),
so the DOT text is what a stored chapter is checked against. Hence the one rule of this package:
**the same runtime state gives the same DOT text, byte for byte** — labels are the stable ones the
trace uses (``b3``, ``TaskGroup 2``, butex numbers, Id slots and versions), never ``id()``,
addresses, ports or times.

Without ``dot`` a Picture never raises in a notebook: it shows its DOT source, under a first line
saying so.

Explained in: notebooks/01_scheduler.ipynb
"""
from __future__ import annotations

from html import escape
from pathlib import Path

import graphviz

#: first line of the text shown instead of the SVG when graphviz's ``dot`` cannot be run
DOT_NOT_FOUND = "graphviz's `dot` was not found; the picture's DOT source follows."


def _render_svg(source: str) -> str:
    """Run ``dot -Tsvg`` on ``source``. Tests replace this to simulate a machine without dot."""
    return graphviz.Source(source).pipe(format="svg", encoding="utf-8")


class Picture:
    """A graphviz picture: its DOT ``source``, shown as SVG in Jupyter, savable to a file."""

    def __init__(self, source: str):
        if not isinstance(source, str):
            raise TypeError(f"source must be DOT text (a str), got {type(source).__name__}")
        self._source = source

    @property
    def source(self) -> str:
        """The DOT text (deterministic for a given runtime state)."""
        return self._source

    def svg(self) -> str:
        """The picture as SVG text. Raises graphviz.ExecutableNotFound when ``dot`` is missing."""
        return _render_svg(self._source)

    def save(self, path) -> Path:
        """Write the picture: ``.dot``/``.gv`` saves the DOT source, ``.svg`` the SVG, any other
        suffix graphviz knows (``.png``, ``.pdf``) is rendered in that format. Returns the path."""
        path = Path(path)
        suffix = path.suffix.lower().lstrip(".")
        if suffix in ("dot", "gv", ""):
            path.write_text(self._source, encoding="utf-8")
        elif suffix == "svg":
            path.write_text(self.svg(), encoding="utf-8")
        else:
            path.write_bytes(graphviz.Source(self._source).pipe(format=suffix))
        return path

    def _repr_mimebundle_(self, include=None, exclude=None):
        try:
            svg = _render_svg(self._source)
        except graphviz.ExecutableNotFound:
            return {"text/plain": DOT_NOT_FOUND + "\n" + self._source}
        except Exception as exc:  # a picture must never break a notebook cell
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return {"text/plain": f"graphviz's `dot` failed ({type(exc).__name__}: {first}); "
                                  f"the picture's DOT source follows.\n" + self._source}
        return {"image/svg+xml": svg, "text/plain": self._source}

    def __repr__(self) -> str:
        first = self._source.split("\n", 1)[0]
        return f"<Picture {first.rstrip(' {')!s} ({self._source.count(chr(10))} lines of DOT)>"


# ---------------------------------------------------------------------------------------------
# HTML-like labels


def text(value, size: int | None = None, color: str | None = None, bold: bool = False,
         italic: bool = False) -> str:
    """Escaped text for an HTML-like label, with optional font size, colour, bold, italic."""
    t = escape(str(value), quote=True).replace("\n", "<BR/>")
    if bold:
        t = f"<B>{t}</B>"
    if italic:
        t = f"<I>{t}</I>"
    attrs = (f' POINT-SIZE="{size}"' if size else "") + (f' COLOR="{color}"' if color else "")
    return f"<FONT{attrs}>{t}</FONT>" if attrs else t


def cell(content: str, port: str | None = None, bgcolor: str | None = None, colspan: int = 1,
         align: str = "LEFT", border: int | None = None) -> str:
    """One ``<TD>``; ``content`` is already label markup (use :func:`text`)."""
    attrs = f' ALIGN="{align}"' + (' BALIGN="LEFT"' if align == "LEFT" else "")
    if port:
        attrs += f' PORT="{port}"'
    if bgcolor:
        attrs += f' BGCOLOR="{bgcolor}"'
    if colspan > 1:
        attrs += f' COLSPAN="{colspan}"'
    if border is not None:
        attrs += f' BORDER="{border}"'
    return f"<TD{attrs}>{content}</TD>"


def table(rows, bgcolor: str = "#ffffff") -> str:
    """An HTML-like label: ``rows`` is a list of rows, each a list of :func:`cell` strings."""
    body = "".join("\n    <TR>" + "".join(r) + "</TR>" for r in rows)
    return (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3" BGCOLOR="{bgcolor}">'
            f"{body}\n    </TABLE>>")


def header(title: str, colspan: int = 2, bgcolor: str = "#dddddd", subtitle: str | None = None) -> list:
    """A title row spanning ``colspan`` columns."""
    content = text(title, bold=True)
    if subtitle:
        content += "<BR/>" + text(subtitle, size=9)
    return [cell(content, bgcolor=bgcolor, colspan=colspan, align="CENTER")]


def kv(key: str, value, port: str | None = None, value_color: str | None = None) -> list:
    """A two-column ``key | value`` row."""
    return [cell(text(key, size=9, color="#555555")),
            cell(text(value, size=10), port=port, bgcolor=value_color)]


class Dot:
    """A DOT document built line by line (plain strings: nothing here depends on object ids)."""

    def __init__(self, name: str, title: str | None = None, rankdir: str = "LR", extra: str = ""):
        self.lines = [f"digraph {name} {{",
                      f'  graph [rankdir={rankdir}, fontname="Helvetica", fontsize=12, nodesep=0.25, '
                      f'ranksep=0.5{", " + extra if extra else ""}];',
                      '  node [shape=plaintext, fontname="Helvetica", fontsize=10];',
                      '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.6];']
        if title:
            self.lines.append(f"  labelloc=t; label=<{text(title, bold=True)}>;")

    def add(self, line: str, indent: int = 1) -> None:
        self.lines.append("  " * indent + line)

    def node(self, name: str, label: str, indent: int = 1, **attrs) -> None:
        extra = "".join(f", {k}={_attr(v)}" for k, v in attrs.items())
        self.add(f"{name} [label={label}{extra}];", indent)

    def edge(self, tail: str, head: str, **attrs) -> None:
        body = ", ".join(f"{k}={_attr(v)}" for k, v in attrs.items())
        self.add(f"{tail} -> {head}" + (f" [{body}]" if body else "") + ";")

    def source(self) -> str:
        return "\n".join(self.lines + ["}"]) + "\n"


def _attr(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
