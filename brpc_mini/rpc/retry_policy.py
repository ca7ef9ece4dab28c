"""RetryPolicy: which failed tries are worth another.

brpc: src/brpc/retry_policy.h, src/brpc/retry_policy.cpp, RpcRetryPolicy

The default retries when the *connection* failed — never when the server answered with an error,
never an RPC timeout, a cancel or a backup-request trigger. In short: retry what may not have
reached the server.
"""
from __future__ import annotations

import errno as _errno

from .errors import EEOF, EFAILEDSOCKET, EH2RUNOUTSTREAMS, EHOSTDOWN, ELIMIT, ELOGOFF, EOVERCROWDED


class RetryPolicy:
    """Subclass and override ``DoRetry(cntl) -> bool``."""

    def DoRetry(self, cntl) -> bool:
        raise NotImplementedError


class RpcRetryPolicy(RetryPolicy):
    """brpc: src/brpc/retry_policy.cpp, RpcRetryPolicy::DoRetry"""

    RETRYABLE = frozenset({EFAILEDSOCKET, EEOF, EHOSTDOWN, ELOGOFF, _errno.ETIMEDOUT, ELIMIT,
                           _errno.ENOENT, _errno.EPIPE, _errno.ECONNREFUSED, _errno.ECONNRESET,
                           _errno.ENODATA, EOVERCROWDED, EH2RUNOUTSTREAMS})

    def DoRetry(self, cntl) -> bool:
        code = cntl.ErrorCode()
        return code != 0 and code in self.RETRYABLE


DefaultRetryPolicy = RpcRetryPolicy()
