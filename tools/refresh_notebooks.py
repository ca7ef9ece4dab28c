#!/usr/bin/env python
"""Re-run chapters in a fresh kernel and store their outputs, ready to commit (``./kit refresh``).

    ./kit refresh                                  # every chapter, notebooks/[0-9][0-9]_*.ipynb
    ./kit refresh notebooks/09_performance.ipynb   # some of them

Each notebook runs top to bottom in a new kernel, with notebooks/ as its working directory (as
``pytest --nbval`` and JupyterLab run it). Then the stored form is tidied: no execution timestamps,
consecutive pieces of one stream joined, and a progress bar's carriage-return refreshes reduced to
the last state of each line (what a terminal would show, and what the book renders). Check the result
with ``./kit test notebooks`` twice: compared outputs must come out identical run after run.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tidy(nb) -> None:
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.outputs:
            if (out.output_type == "stream" and merged and merged[-1].output_type == "stream"
                    and merged[-1].name == out.name):
                merged[-1].text += out.text
                continue
            merged.append(out)
        for out in merged:
            if out.output_type == "stream" and "\r" in out.text:
                out.text = "\n".join(line.rsplit("\r", 1)[-1] for line in out.text.split("\n"))
        cell.outputs = [o for o in merged if o.output_type != "stream" or o.text.strip()]


def refresh(path: str, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    tidy(nb)
    nbformat.write(nb, path)
    return time.monotonic() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to refresh (default: every chapter)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may run (600)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(glob.glob(os.path.join(ROOT, "notebooks", "[0-9][0-9]_*.ipynb")))
    for path in paths:
        if not path.endswith(".ipynb") or not os.path.isfile(path):
            parser.error(f"not a notebook file: {path}")
    for path in paths:
        print(f"refresh: {os.path.relpath(path, ROOT)} ...", end=" ", flush=True)
        print(f"{refresh(path, args.timeout):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
