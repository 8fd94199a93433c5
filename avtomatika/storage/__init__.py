"""Storage backends behind one contract (:class:`~avtomatika.storage.base.Storage`)."""

from avtomatika.storage.base import CommitOutcome, Lease, Storage
from avtomatika.storage.memory import MemoryStorage

__all__ = ["CommitOutcome", "Lease", "MemoryStorage", "Storage"]
