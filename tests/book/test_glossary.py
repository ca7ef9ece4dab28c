"""The glossary's rows are checked against the code and the chapters they point to.

Every `brpc_mini....` path in book/glossary.md must import (a class attribute set in ``__init__``
counts when the class's source assigns it), and every chapter a row links to must mention one of the
row's names. The names the project's issue asks for must all have a row. No build, no browser: this
runs in the default test suite.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GLOSSARY = ROOT / "book" / "glossary.md"

# the names the book's issue lists; each must be a row of the glossary
REQUIRED = [
    "TaskControl", "TaskGroup", "TaskMeta", "_rq", "_remote_rq", "run_main_task", "sched_to",
    "ending_sched", "remained callback", "Butex", "ButexBthreadWaiter", "ButexPthreadWaiter",
    "bthread_id_t", "Id", "pending_q", "TimerThread", "Channel", "ChannelOptions", "Controller",
    "Channel::CallMethod", "Controller::IssueRPC", "current_id", "Socket", "Socket::Write",
    "KeepWrite", "EventDispatcher", "InputMessenger", "_nevent", "ProcessRpcResponse",
    "OnVersionedRPCReturned", "EndRPC", "baidu_std", "RpcMeta",
]


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip() for c in cells]


def glossary_rows() -> list[dict]:
    rows = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = split_row(line)
        if cells[0] in ("brpc name", "kit name"):
            continue
        assert len(cells) == 5, f"a glossary row needs 5 cells: {line}"
        name, _what, _brpc_file, module, chapters = cells
        rows.append({
            "line": line,
            "names": re.findall(r"`([^`]+)`", name),
            "label": re.sub(r"`[^`]*`", "", name).strip(" /"),
            "paths": re.findall(r"`(brpc_mini[^`]*)`", module),
            "chapters": re.findall(r"\]\(\.\./notebooks/([0-9A-Za-z_]+\.ipynb)\)", chapters),
        })
    return rows


ROWS = glossary_rows()


def chapter_text(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))
    return "\n".join("".join(cell["source"]) for cell in nb["cells"])


def resolve(path: str) -> None:
    """Import ``path`` (module[.attribute...]); an instance attribute counts if the class assigns it."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        break
    else:
        raise AssertionError(f"no module in {path}")
    for attr in parts[cut:]:
        if hasattr(obj, attr):
            obj = getattr(obj, attr)
            continue
        assert inspect.isclass(obj), f"{path}: {obj!r} has no attribute {attr!r}"
        source = inspect.getsource(obj)
        assert re.search(rf"self\.{re.escape(attr)}\s*(:[^=\n]*)?=", source), \
            f"{path}: class {obj.__name__} neither has nor assigns {attr!r}"
        return


def test_glossary_has_rows():
    assert len(ROWS) > 60
    for row in ROWS:
        assert row["names"] and row["paths"] and row["chapters"], f"incomplete row: {row['line']}"


@pytest.mark.parametrize("path", sorted({p for row in ROWS for p in row["paths"]}))
def test_glossary_path_imports(path):
    resolve(path)


def mentions(text: str, name: str) -> bool:
    """``A::b`` may be written ``A::b``, ``A.b`` or just ``b`` in a chapter; brpc's gflag
    ``FLAGS_x`` is ``FLAGS.x`` in brpc_mini."""
    keys = {name}
    if "::" in name:
        keys |= {name.replace("::", "."), name.split("::")[-1]}
    if name.startswith("FLAGS_"):
        keys.add(name[len("FLAGS_"):])
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", text) for key in keys)


@pytest.mark.parametrize("row", ROWS, ids=[" / ".join(r["names"]) for r in ROWS])
def test_glossary_chapters_mention_the_name(row):
    for chapter in row["chapters"]:
        assert (ROOT / "notebooks" / chapter).exists(), chapter
        text = chapter_text(chapter)
        assert any(mentions(text, name) for name in row["names"]), \
            f"{chapter} mentions none of {row['names']}"


def test_glossary_covers_the_names_the_book_promises():
    listed = {name for row in ROWS for name in row["names"]} | {row["label"] for row in ROWS}
    missing = [name for name in REQUIRED if name not in listed
               and not any(name in label for label in listed)]
    assert not missing, f"names without a glossary row: {missing}"
