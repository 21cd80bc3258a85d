"""Where the state of turns is shared: per-agent turn records, the turn logs, and locks.

:class:`TurnStore` is the contract; :mod:`app.store.memory` keeps it in this process
(one worker, tests, ``task serve`` without Redis) and :mod:`app.store.redis` in Redis
(several workers and replicas).  One contract test suite runs against both
(``tests/store/``).  Every key a store writes has an end: a record expires some time
after its last deadline, a log some minutes after its turn ended.
"""

from __future__ import annotations

from .protocol import LockTimeout, LogConflict, LogFrame, LogGone, LogMeta, TurnStore

__all__ = ["LockTimeout", "LogConflict", "LogFrame", "LogGone", "LogMeta", "TurnStore"]
