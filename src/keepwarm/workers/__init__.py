"""Worker processes for models that hold the GIL, or that should give memory back when
unloaded (isolation): a pool of fresh interpreters, each loading its models once from a
``LoadDescription``; typed messages; tensors through shared memory; a dead worker
restarted with its models loaded again; a crash loop turned into a FAILED version.

``keepwarm.config_workers`` describes the ``[workers]`` table that turns it on.
"""

from keepwarm.workers.group import WorkerInfo
from keepwarm.workers.model import WorkerModel
from keepwarm.workers.pool import WorkerPool, default_pool, load_in_workers

__all__ = ["WorkerInfo", "WorkerModel", "WorkerPool", "default_pool", "load_in_workers"]
