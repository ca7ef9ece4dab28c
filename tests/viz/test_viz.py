"""Tests for brpc_mini.viz: pictures are deterministic, say what they should, and never break a
notebook (no ``dot``: the DOT source is shown instead)."""
from __future__ import annotations

import pathlib
import re
import subprocess
import warnings

import graphviz
import pytest

from brpc_mini.bthread import (
    Runtime, UnfinishedBthreadWarning, bthread_id_create_ranged, bthread_id_error2, bthread_id_join,
    bthread_id_lock, bthread_id_lock_and_reset_range, bthread_id_unlock, bthread_id_unlock_and_destroy,
    bthread_join, bthread_start_background, bthread_usleep,
)
from brpc_mini.viz import Picture, draw_butex, draw_id, draw_runtime, draw_trace
from brpc_mini.viz import picture as picture_module
from brpc_mini.viz.picture import DOT_NOT_FOUND

#: things that must never appear in a picture: addresses, object reprs with ids
_UNSTABLE = re.compile(r"0x7f[0-9a-f]{6,}| at 0x[0-9a-f]+|object at")


def helper(i):
    pass


def sender(i):
    kids = [bthread_start_background(helper, i) for _ in range(3)]
    for k in kids:
        bthread_join(k)


def _closed(rt):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfinishedBthreadWarning)
        rt.close()
    assert not rt.errors


def chapter_one_run(seed: int = 24) -> dict:
    """The scenario of notebooks/01_scheduler.ipynb; the DOT text at each stop."""
    pictures = {}
    rt = Runtime(concurrency=4, mode="deterministic", seed=seed, switch_budget=2)
    with rt:
        pictures["empty"] = draw_runtime(rt).source
        tids = [bthread_start_background(sender, i) for i in range(3)]
        pictures["started"] = draw_runtime(rt).source

        def main():
            for t in tids:
                bthread_join(t)

        h = rt.start_pthread(main, name="main")
        rt.step()
        pictures["main_blocked"] = draw_runtime(rt, title="seed step 6").source
        pictures["version_butex"] = draw_butex(rt.address_meta(tids[0]).version_butex).source
        rt.step()
        pictures["after_g1"] = draw_runtime(rt).source
        h.join()
        pictures["done"] = draw_runtime(rt).source
        pictures["trace"] = draw_trace(rt.trace).source
        pictures["trace_text"] = rt.trace.format()
        _closed(rt)
    return pictures


@pytest.fixture(scope="module")
def run_a():
    return chapter_one_run()


def test_same_state_same_dot_text(run_a):
    run_b = chapter_one_run()
    assert run_a.keys() == run_b.keys()
    for key in run_a:
        assert run_a[key] == run_b[key], key


def test_different_seed_different_picture(run_a):
    other = chapter_one_run(seed=1)
    assert other["started"] != run_a["started"]


def test_no_unstable_labels(run_a):
    for key, source in run_a.items():
        assert not _UNSTABLE.search(source), (key, _UNSTABLE.search(source).group(0))


def test_empty_world_says_why(run_a):
    src = run_a["empty"]
    assert "no TaskControl yet" in src
    assert "get_or_new_task_control" in src
    assert "TaskGroup 1" not in src


def test_started_picture_shows_remote_queues(run_a):
    src = run_a["started"]
    for n in (1, 2, 3, 4):
        assert f"TaskGroup {n}" in src
    assert "queued in g1._remote_rq" in src
    assert "empty (not started)" in src
    assert "0x100000000 (version 1, slot 0)" in src
    assert "sender(0)" in src
    # an edge from a queue cell to its TaskMeta
    assert re.search(r"g1:remote_rq0 -> b1", src)
    assert "version_butex" in src


def test_main_blocked_on_version_butex(run_a):
    src = run_a["main_blocked"]
    assert "pthread main" in src
    assert "ButexPthreadWaiter" in src
    assert "blocked: waits on Butex" in src and "(version_butex of b1)" in src
    assert "seed step 6" in src
    butex = run_a["version_butex"]
    assert "version_butex of b1" in butex
    assert "ButexPthreadWaiter" in butex and "NOT_SIGNALLED" in butex


def test_bthread_waiter_and_local_queue(run_a):
    src = run_a["after_g1"]
    assert "ButexBthreadWaiter" in src
    assert "waiting on Butex" in src and "(version_butex of b4)" in src
    assert "queued in g1._rq" in src
    assert "greenlet" in src          # b1 has run: it has a stack now
    assert re.search(r"b1 -> butex\d+:w0", src)


def test_finished_world(run_a):
    src = run_a["done"]
    assert "0 live, 12 created" in src
    assert "TaskMeta" not in src


def test_trace_picture(run_a):
    src = run_a["trace"]
    assert "TaskGroup 4" in src and "steal" in src and "reusing the stack of" in src


def test_picture_mimebundle_with_dot():
    pic = Picture("digraph { a -> b; }\n")
    bundle = pic._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/plain"}
    assert "<svg" in bundle["image/svg+xml"]
    assert bundle["text/plain"] == pic.source
    assert pic.svg().lstrip().startswith("<?xml")


def test_picture_without_dot(monkeypatch):
    def missing(source):
        raise graphviz.ExecutableNotFound(["dot", "-Tsvg"])

    monkeypatch.setattr(picture_module, "_render_svg", missing)
    pic = Picture("digraph { a -> b; }\n")
    bundle = pic._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    first, rest = bundle["text/plain"].split("\n", 1)
    assert first == DOT_NOT_FOUND
    assert rest == pic.source
    with pytest.raises(graphviz.ExecutableNotFound):
        pic.svg()


def test_picture_when_dot_fails(monkeypatch):
    def broken(source):
        raise subprocess.CalledProcessError(1, ["dot"], stderr=b"syntax error")

    monkeypatch.setattr(picture_module, "_render_svg", broken)
    bundle = Picture("digraph { a -> }\n")._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    assert bundle["text/plain"].startswith("graphviz's `dot` failed")


def test_picture_save(tmp_path: pathlib.Path):
    pic = Picture("digraph { a -> b; }\n")
    assert pic.save(tmp_path / "p.dot").read_text() == pic.source
    assert "<svg" in pic.save(tmp_path / "p.svg").read_text()
    with pytest.raises(TypeError):
        Picture(b"digraph {}")


def test_draw_butex_lists_waiters_in_order():
    with Runtime(concurrency=4, mode="deterministic", seed=3) as rt:
        def sleeper():
            bthread_usleep(1000)

        tid = bthread_start_background(sleeper)

        def joiner():
            bthread_join(tid)

        j1 = bthread_start_background(joiner)
        j2 = bthread_start_background(joiner)
        rt.run_until(lambda: len(rt.address_meta(tid).version_butex.waiters) == 2)
        src = draw_butex(rt.address_meta(tid).version_butex, title="two joiners").source
        seqs = [rt.address_meta(t).seq for t in (j1, j2)]
        rows = re.findall(r"<B>b(\d+)</B>", src)
        assert [int(r) for r in rows] == seqs
        assert "ButexBthreadWaiter" in src and "READY" in src
        assert f"version_butex of b{rt.address_meta(tid).seq}" in src
        rt.run()
        _closed(rt)
    with pytest.raises(TypeError):
        draw_butex(42)


def test_draw_id_states():
    with Runtime(concurrency=4, mode="deterministic", seed=0) as rt:
        cid = bthread_id_create_ranged("cntl", None, 1)
        assert "unlocked" in draw_id(cid).source
        assert bthread_id_lock_and_reset_range(cid, 5) == 0

        def locker():
            bthread_id_lock(cid + 2)
            bthread_id_unlock(cid + 2)

        bthread_start_background(locker)
        rt.run()
        bthread_id_error2(cid, 1008, "timed out")
        h = rt.start_pthread(lambda: bthread_id_join(cid), name="main")
        rt.step()
        src = draw_id(cid + 1).source
        assert "slot 0, version 2: valid" in src
        assert "contended" in src and "locked_ver" in src and "unlockable_ver" in src and "end_ver" in src
        assert "this id" in src
        assert "ERPCTIMEDOUT" in src and "timed out" in src
        assert "ButexBthreadWaiter of b1, expected 7" in src
        assert "ButexPthreadWaiter of pthread main" in src
        assert src == draw_id(cid + 1).source
        # unlock runs the pending error's on_error (the default destroys the Id)
        assert bthread_id_unlock(cid + 1) == 0
        h.join()
        rt.run()
        dead = draw_id(cid).source
        assert "destroyed" in dead and "not valid" in dead and "next first_ver" in dead
        assert "no Id was ever made" in draw_id(cid + (5 << 32)).source
        _closed(rt)


def test_draw_id_elides_wide_ranges():
    with Runtime(concurrency=4, mode="deterministic", seed=0) as rt:
        cid = bthread_id_create_ranged(None, None, 100)
        src = draw_id(cid + 50).source
        assert "..." in src and ">51<" in src and "this id" in src
        assert src.count("valid</FONT>") < 20
        assert bthread_id_lock(cid) == 0
        assert bthread_id_unlock_and_destroy(cid) == 0
        _closed(rt)


def test_draw_runtime_threads_mode_does_not_raise():
    with Runtime(concurrency=4, mode="threads") as rt:
        tids = [bthread_start_background(sender, i) for i in range(3)]
        pic = draw_runtime(rt)
        for t in tids:
            bthread_join(t)
        assert "TaskControl" in pic.source
        assert "TaskMeta" not in draw_runtime(rt).source
        _closed(rt)


def test_nothing_in_brpc_mini_imports_viz():
    root = pathlib.Path(__file__).resolve().parents[2] / "brpc_mini"
    offenders = []
    for path in root.rglob("*.py"):
        if "viz" in path.relative_to(root).parts:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from|import)\s+(brpc_mini\.viz|\.+viz)\b", text, re.M):
            offenders.append(str(path.relative_to(root)))
    assert not offenders
