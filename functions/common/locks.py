"""In-process locks by key: one writer at a time per document, per order, per invoice year.

Most of them are a workaround for the local database: FerretDB 1.x applies an update as
read-modify-write without isolation, so two concurrent updates of one document can lose one
(`../shared/notes/database.md`). On a database that applies each conditional update atomically
(MongoDB) the conditional filters alone keep the shop correct, across replicas too, and
`SHOP_DOCUMENT_LOCKS=false` turns these locks off: the replica race (tests/replicas) runs that way,
so nothing may depend on them for correctness across processes.

A lock lives as long as someone holds or waits on it (weak values), so keys never pile up.
"""

import asyncio
import contextlib
import weakref
from collections.abc import Hashable
from typing import Any, AsyncContextManager

from functions.common.settings import get_settings


class KeyedLocks:
    def __init__(self, *, isolation_workaround: bool = True) -> None:
        """`isolation_workaround`: the lock only makes up for FerretDB's missing isolation, and
        SHOP_DOCUMENT_LOCKS=false turns it off."""
        self.isolation_workaround = isolation_workaround
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: Hashable) -> AsyncContextManager:
        if self.isolation_workaround and not get_settings().document_locks:
            return contextlib.nullcontext()
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


_documents = KeyedLocks()


def document_lock(model: Any, doc_id: Any) -> AsyncContextManager:
    """This process's lock for writes to one stored document (`model` a Beanie Document class).

    FerretDB 1.x applies an update as read-modify-write of the whole document without isolation:
    of two concurrent updates of one document one can be lost (measured: 20 concurrent `$set`s of
    distinct fields kept one). Every write through `functions/common/store.py`, and the outbox
    relay's taking its published events off, holds it. Not reentrant: hold it around one write.
    """
    return _documents((model.get_collection_name(), str(doc_id)))
