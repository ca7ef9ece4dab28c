"""brpc_mini.viz — pictures of live runtime objects, drawn with graphviz.

brpc: none. This package reads brpc_mini's objects — private fields included; it is the X-ray —
and never changes them. Nothing in brpc_mini imports it; it imports the runtime.

Every ``draw_*`` function returns a :class:`Picture`: DOT source that Jupyter shows as an SVG and
whose ``text/plain`` form is the DOT text itself. The DOT text depends only on the runtime's state
and uses only stable labels (``b3`` = the third bthread created, ``TaskGroup 2``, butex numbers,
Id slots and versions), never ``id()``, addresses, ports or times, so a stored notebook output
can be compared byte for byte (``notebooks/nbval_sanitize.cfg`` blanks the SVG, whose coordinates
differ between Graphviz builds). Without graphviz's ``dot`` a picture shows its DOT source under a
first line that says so; it never raises in a notebook.

* :func:`draw_runtime` — TaskControl, TaskGroups with ``_rq``/``_remote_rq``, live TaskMetas,
  their ``version_butex`` and waiters, the non-worker threads (chapter 01);
* :func:`draw_butex` — butexes with their waiters in wake order (chapters 01, 02);
* :func:`draw_id` — a bthread_id's version line, lock state, waiters and pending errors (chapter 03);
* :func:`draw_trace` — the trace as swimlanes per TaskGroup;
* :func:`memory_layout` — the seed's figures at steps 6 and 11: main's stack, the heap, and each
  bthread's stack read from its suspended greenlet (chapter 07);
* :func:`sequence_diagram` — one RPC's events across groups, scheduling and RPC checkpoints
  (chapters 06, 07); :func:`locals_of` reads a local off a suspended stack.

``memory`` and ``sequence`` hold the seed's memory-layout figures and the sequence diagram the RPC
chapters use.

Explained in: notebooks/01_scheduler.ipynb
"""
from .butex import draw_butex  # noqa: F401
from .id import draw_id  # noqa: F401
from .picture import Picture  # noqa: F401
from .scheduler import draw_runtime  # noqa: F401
from .memory import locals_of, memory_layout  # noqa: F401
from .sequence import sequence_diagram  # noqa: F401
from .trace import draw_trace  # noqa: F401

__all__ = ["Picture", "draw_runtime", "draw_butex", "draw_id", "draw_trace", "memory_layout",
           "sequence_diagram", "locals_of"]
