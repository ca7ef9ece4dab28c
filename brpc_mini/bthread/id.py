"""bthread_id: the versioned lock that every RPC's correlation id is.

brpc: src/bthread/id.h, src/bthread/id.cpp

An id is ``(slot << 32) | version`` — the slot in the high bits, the version in the low bits
(the reverse of a tid), so ``call_id + k`` names the same Id with a version ``k`` higher. That is
how one RPC gets a distinct, still-valid correlation id for each try: ``call_id + nretry + 1``.

The Id's ``butex`` value *is* its lock state. With ``first_ver`` the lowest valid version and
``locked_ver`` one past the highest (valid versions are ``[first_ver, locked_ver)``):

=====================  ===================================================
butex value            meaning
=====================  ===================================================
``first_ver``          unlocked
``locked_ver``         locked
``locked_ver + 1``     locked, and someone waits (``contended_ver``)
``locked_ver + 2``     locked, about to be destroyed (``unlockable_ver``)
=====================  ===================================================

``end_ver = locked_ver + 3`` becomes the next generation's ``first_ver`` when the Id is destroyed,
so every old version dies at once: a late response, timer or socket error then fails with EINVAL
and never touches the Controller.

Errors raised while the Id is locked wait in ``pending_q`` and are delivered, one per unlock, to
``on_error`` with the lock handed over.

Explained in: notebooks/03_id.ipynb
"""
from __future__ import annotations

import threading
from collections import deque, namedtuple

from .butex import Butex, butex_wait, butex_wake, butex_wake_all, butex_wake_except
from .context import current_runtime
from .errno import EBUSY, EINTR, EINVAL, EPERM, EWOULDBLOCK

#: brpc: src/bthread/id.cpp, ID_MAX_RANGE
ID_MAX_RANGE = 1024
INVALID_BTHREAD_ID = 0

PendingError = namedtuple("PendingError", "id error_code error_text location")


def get_version(id_value: int) -> int:
    return id_value & 0xFFFFFFFF


def get_slot(id_value: int) -> int:
    return id_value >> 32


def make_id(version: int, slot: int) -> int:
    """brpc: src/bthread/id.cpp, make_id"""
    return (slot << 32) | version


class Id:
    """One slot of the Id pool. Its ``butex`` and ``join_butex`` are kept across generations.

    brpc: src/bthread/id.cpp, Id
    """
    __slots__ = ("slot", "first_ver", "locked_ver", "mutex", "data", "on_error", "on_error2",
                 "lock_location", "butex", "join_butex", "pending_q", "__weakref__")

    def __init__(self, slot: int, runtime):
        self.slot = slot
        self.first_ver = 0
        self.locked_ver = 0
        self.mutex = threading.Lock()
        self.data = None
        self.on_error = None
        self.on_error2 = None
        self.lock_location = ""
        self.butex = Butex(0, runtime=runtime, owner=f"Id {slot} butex")
        self.join_butex = Butex(0, runtime=runtime, owner=f"Id {slot} join_butex")
        self.pending_q = deque()

    def contended_ver(self) -> int:
        return self.locked_ver + 1

    def unlockable_ver(self) -> int:
        return self.locked_ver + 2

    def last_ver(self) -> int:
        return self.unlockable_ver()

    def end_ver(self) -> int:
        return self.last_ver() + 1

    def has_version(self, id_ver: int) -> bool:
        return self.first_ver <= id_ver < self.locked_ver

    def state(self) -> str:
        """The lock state the butex value encodes, as a word."""
        v = self.butex.value
        if self.first_ver == self.locked_ver:
            return "destroyed"
        if v == self.first_ver:
            return "unlocked"
        if v == self.locked_ver:
            return "locked"
        if v == self.contended_ver():
            return "contended"
        if v == self.unlockable_ver():
            return "unlockable"
        return f"?{v}"

    def __repr__(self) -> str:
        return (f"<Id slot={self.slot} first_ver={self.first_ver} locked_ver={self.locked_ver} "
                f"butex={self.butex.value} {self.state()} pending={len(self.pending_q)}>")


class IdPool:
    """The runtime's Ids, reused slot by slot (brpc: butil ResourcePool<Id>)."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.ids: list = []
        self._free: list = []
        self._lock = threading.Lock()
        self.nlive = 0

    def take(self) -> Id:
        with self._lock:
            if self._free:
                meta = self.ids[self._free.pop()]
            else:
                meta = Id(len(self.ids), self.runtime)
                self.ids.append(meta)
            self.nlive += 1
            return meta

    def give_back(self, meta: Id) -> None:
        with self._lock:
            self._free.append(meta.slot)
            self.nlive -= 1

    def address(self, id_value: int):
        slot = get_slot(id_value)
        if 0 <= slot < len(self.ids):
            return self.ids[slot]
        return None

    def live(self) -> list:
        """Ids whose current generation is not destroyed."""
        free = set(self._free)
        return [i for i in self.ids if i.slot not in free]


def id_pool(runtime=None) -> IdPool:
    rt = runtime or current_runtime()
    if rt.ids is None:
        rt.ids = IdPool(rt)
    return rt.ids


def _check_id(id_value, name="id"):
    if not isinstance(id_value, int) or isinstance(id_value, bool):
        raise TypeError(f"{name} must be an int (a bthread_id_t value), got {type(id_value).__name__}")


def _address(id_value: int):
    _check_id(id_value)
    return id_pool().address(id_value)


def address_id(id_value: int):
    """The Id object behind ``id_value`` (whatever its generation), or None. For pictures."""
    return _address(id_value)


def default_bthread_id_on_error(id_value, data, error_code) -> int:
    """brpc: src/bthread/id.cpp, default_bthread_id_on_error (unlock and destroy)."""
    return bthread_id_unlock_and_destroy(id_value)


def _create(data, on_error, on_error2, range_) -> int:
    if not isinstance(range_, int) or not 1 <= range_ <= ID_MAX_RANGE:
        raise ValueError(f"range must be an int in [1, {ID_MAX_RANGE}], got {range_!r}")
    if on_error is not None and not callable(on_error):
        raise TypeError("on_error must be callable(id, data, error_code)")
    if on_error2 is not None and not callable(on_error2):
        raise TypeError("on_error2 must be callable(id, data, error_code, error_text)")
    meta = id_pool().take()
    with meta.mutex:
        meta.data = data
        meta.on_error = on_error if on_error2 is None else None
        if meta.on_error is None and on_error2 is None:
            meta.on_error = default_bthread_id_on_error
        meta.on_error2 = on_error2
        if meta.butex.value == 0 or meta.butex.value + ID_MAX_RANGE + 2 > 0xFFFFFFFF:
            meta.butex.value = 1
        meta.first_ver = meta.butex.value
        meta.locked_ver = meta.first_ver + range_
        meta.join_butex.value = meta.first_ver
        meta.pending_q.clear()
        meta.lock_location = ""
        return make_id(meta.first_ver, meta.slot)


def bthread_id_create(data=None, on_error=None) -> int:
    """Create an unlocked Id with one version; returns its value.

    brpc: src/bthread/id.cpp, bthread_id_create

    ``on_error(id, data, error_code)`` runs for each ``bthread_id_error``; the default unlocks
    and destroys the Id.
    """
    return _create(data, on_error, None, 1)


def bthread_id_create_ranged(data=None, on_error=None, range: int = 1) -> int:  # noqa: A002
    """Create an Id whose versions ``[id, id + range)`` are all valid.

    brpc: src/bthread/id.cpp, bthread_id_create_ranged
    """
    return _create(data, on_error, None, range)


def bthread_id_create2(data=None, on_error2=None) -> int:
    """Create an Id whose error callback also gets the error text.

    brpc: src/bthread/id.cpp, bthread_id_create2 (``on_error2(id, data, error_code, error_text)``)
    """
    return _create(data, None, on_error2, 1)


def bthread_id_lock_and_reset_range(id_value: int, range: int = 0, pdata=None) -> int:  # noqa: A002
    """Lock the Id, waiting while another holder has it; widen its range to ``range``.

    brpc: src/bthread/id.cpp, bthread_id_lock_and_reset_range_verbose

    Returns 0 (``pdata[0]`` gets the Id's data when ``pdata`` is a list), EINVAL if the version is
    not valid (the Id was destroyed), EPERM if it is about to be destroyed. Ranges never shrink.
    A caller that had to wait stores ``contended_ver`` when it gets the lock, so its own unlock
    wakes whoever still waits: the classic three-state mutex.
    """
    if not isinstance(range, int) or not 0 <= range <= ID_MAX_RANGE:
        raise ValueError(f"range must be an int in [0, {ID_MAX_RANGE}], got {range!r}")
    meta = _address(id_value)
    if meta is None:
        return EINVAL
    id_ver = get_version(id_value)
    ever_contended = False
    meta.mutex.acquire()
    while meta.has_version(id_ver):
        if meta.butex.value == meta.first_ver:
            if range and meta.first_ver + range > meta.locked_ver:
                meta.locked_ver = meta.first_ver + range
            meta.butex.value = meta.contended_ver() if ever_contended else meta.locked_ver
            data = meta.data
            meta.mutex.release()
            if pdata is not None:
                pdata[:] = [data]
            return 0
        if meta.butex.value != meta.unlockable_ver():
            meta.butex.value = meta.contended_ver()
            expected = meta.butex.value
            meta.mutex.release()
            ever_contended = True
            rc = butex_wait(meta.butex, expected)
            if rc not in (0, EWOULDBLOCK, EINTR):
                return rc
            meta.mutex.acquire()
        else:
            meta.mutex.release()
            return EPERM
    meta.mutex.release()
    return EINVAL


def bthread_id_lock(id_value: int, pdata=None) -> int:
    """Lock the Id (waiting if needed). brpc: src/bthread/id.cpp, bthread_id_lock"""
    return bthread_id_lock_and_reset_range(id_value, 0, pdata)


def bthread_id_trylock(id_value: int, pdata=None) -> int:
    """Lock the Id if it is free; EBUSY if not. brpc: src/bthread/id.cpp, bthread_id_trylock"""
    meta = _address(id_value)
    if meta is None:
        return EINVAL
    with meta.mutex:
        if not meta.has_version(get_version(id_value)):
            return EINVAL
        if meta.butex.value != meta.first_ver:
            return EBUSY
        meta.butex.value = meta.locked_ver
        if pdata is not None:
            pdata[:] = [meta.data]
        return 0


def _acquire_locked(id_value: int):
    """``(meta, 0)`` with ``meta.mutex`` held, when ``id_value`` is a valid version of a locked Id;
    otherwise ``(None, EINVAL)`` for a dead version or ``(None, EPERM)`` when it is not locked."""
    meta = _address(id_value)
    if meta is None:
        return None, EINVAL
    meta.mutex.acquire()
    if not meta.has_version(get_version(id_value)):
        meta.mutex.release()
        return None, EINVAL
    if meta.butex.value == meta.first_ver:
        meta.mutex.release()
        return None, EPERM
    return meta, 0


def _run_on_error(meta, pending: PendingError, data) -> int:
    if meta.on_error2 is not None:
        return meta.on_error2(pending.id, data, pending.error_code, pending.error_text or "")
    return meta.on_error(pending.id, data, pending.error_code)


def bthread_id_unlock(id_value: int) -> int:
    """Unlock; or, if errors are pending, hand the lock to ``on_error`` for the first of them.

    brpc: src/bthread/id.cpp, bthread_id_unlock

    EINVAL for a dead version, EPERM if not locked. A contended unlock wakes one waiter.
    """
    meta, rc = _acquire_locked(id_value)
    if meta is None:
        return rc
    if meta.pending_q:
        pending = meta.pending_q.popleft()
        data = meta.data
        meta.mutex.release()
        _run_on_error(meta, pending, data)
        return 0
    contended = meta.butex.value == meta.contended_ver()
    meta.butex.value = meta.first_ver
    meta.mutex.release()
    if contended:
        butex_wake(meta.butex)
    return 0


def bthread_id_unlock_and_destroy(id_value: int) -> int:
    """Destroy a locked Id: every version dies, lockers and joiners wake.

    brpc: src/bthread/id.cpp, bthread_id_unlock_and_destroy

    Pending errors are dropped. Lockers get EINVAL; ``bthread_id_join`` returns.
    """
    meta, rc = _acquire_locked(id_value)
    if meta is None:
        return rc
    end = meta.end_ver()
    meta.first_ver = end
    meta.locked_ver = end
    meta.butex.value = end
    meta.join_butex.value = end
    meta.pending_q.clear()
    meta.data = None
    meta.mutex.release()
    pool = id_pool()
    butex_wake_except(meta.butex, 0)
    butex_wake_all(meta.join_butex)
    # the slot goes back last, as in brpc: a joiner woken above (it may run right away, through
    # exchange) that starts its next RPC gets a new slot, not this one
    pool.give_back(meta)
    return 0


def bthread_id_about_to_destroy(id_value: int) -> int:
    """Mark a locked Id as being destroyed: lockers stop waiting and get EPERM.

    brpc: src/bthread/id.cpp, bthread_id_about_to_destroy

    Like ``bthread_id_unlock_and_destroy`` it wakes the waiting lockers with
    ``butex_wake_except(butex, 0)``: they are queued, and the caller keeps its worker.
    """
    meta, rc = _acquire_locked(id_value)
    if meta is None:
        return rc
    contended = meta.butex.value == meta.contended_ver()
    meta.butex.value = meta.unlockable_ver()
    meta.mutex.release()
    if contended:
        butex_wake_except(meta.butex, 0)
    return 0


def bthread_id_cancel(id_value: int) -> int:
    """Destroy an unlocked, unused Id. EPERM if locked.

    brpc: src/bthread/id.cpp, bthread_id_cancel

    Only the butex, ``first_ver`` and ``locked_ver`` jump to ``end_ver``; nobody is woken, and
    ``join_butex`` and ``data`` are left as they are (the next create resets them).
    """
    meta = _address(id_value)
    if meta is None:
        return EINVAL
    with meta.mutex:
        if not meta.has_version(get_version(id_value)):
            return EINVAL
        if meta.butex.value != meta.first_ver:
            return EPERM
        end = meta.end_ver()
        meta.butex.value = end
        meta.first_ver = end
        meta.locked_ver = end
    id_pool().give_back(meta)
    return 0


def bthread_id_join(id_value: int) -> int:
    """Wait until the Id is destroyed; at once if it already is.

    brpc: src/bthread/id.cpp, bthread_id_join
    """
    meta = _address(id_value)
    if meta is None:
        return EINVAL
    id_ver = get_version(id_value)
    while True:
        with meta.mutex:
            alive = meta.has_version(id_ver)
            expected = meta.join_butex.value
        if not alive:
            return 0
        rc = butex_wait(meta.join_butex, expected)
        if rc not in (0, EWOULDBLOCK, EINTR):
            return rc


def bthread_id_error2(id_value: int, error_code: int, error_text: str = "", location: str = "") -> int:
    """Report an error: run ``on_error`` now if unlocked, else queue it in ``pending_q``.

    brpc: src/bthread/id.cpp, bthread_id_error2_verbose

    A dead version returns EINVAL and the error is dropped: that is how late timers and stale
    socket notifications become no-ops. ``on_error`` runs in the caller's thread, which may be the
    TimerThread.
    """
    meta = _address(id_value)
    if meta is None:
        return EINVAL
    if not isinstance(error_code, int):
        raise TypeError(f"error_code must be an int, got {type(error_code).__name__}")
    meta.mutex.acquire()
    if not meta.has_version(get_version(id_value)):
        meta.mutex.release()
        return EINVAL
    if meta.butex.value == meta.first_ver:
        meta.butex.value = meta.locked_ver
        data = meta.data
        meta.mutex.release()
        _run_on_error(meta, PendingError(id_value, error_code, error_text, location), data)
        return 0
    meta.pending_q.append(PendingError(id_value, error_code, error_text, location))
    meta.mutex.release()
    return 0


def bthread_id_error(id_value: int, error_code: int) -> int:
    """brpc: src/bthread/id.cpp, bthread_id_error (``bthread_id_error2`` without text)."""
    return bthread_id_error2(id_value, error_code, "")
