"""Dynamic batching: a ``Batcher`` per served version, pure merge/split helpers, executors."""

from keepwarm.batching.batcher import Batcher
from keepwarm.batching.executor import Executor, ThreadExecutor, pool_size, threads_per_call
from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.merge import BatchSplitError, PadAxes, bucket_for, buckets, merge, split
from keepwarm.batching.stats import BatchStats

__all__ = [
    "BatchSplitError",
    "BatchStats",
    "Batcher",
    "Executor",
    "LatencyTable",
    "PadAxes",
    "ThreadExecutor",
    "bucket_for",
    "buckets",
    "merge",
    "pool_size",
    "split",
    "threads_per_call",
]
