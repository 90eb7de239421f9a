"""Where an experiment runs: a local Dask cluster whose workers x torch threads fit the cores
(:func:`plan_local`), or a running ``dask.distributed`` scheduler (:func:`connect`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

#: torch threads per worker of a local cluster: two threads keep oneDNN's batches efficient
#: while the serial parts of a movie (tracking, crops, timelines) run in as many workers as fit
THREADS_PER_WORKER = 2


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. a SLURM allocation), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _torch_threads_here(per_worker: dict | None = None) -> int | None:
    """Torch threads for a task on a worker we did not start: the CPUs of its host shared by all
    the task slots of the workers on that host (``per_worker``, worked out by the client, see
    :func:`threads_per_worker`), or, for a worker that joined later, by its own slots."""
    try:
        from dask.distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError, AttributeError):
        return None
    if per_worker and worker.address in per_worker:
        return per_worker[worker.address]
    return max(1, usable_cpus() // max(1, worker.state.nthreads))


def threads_per_worker(client) -> dict[str, int]:
    """Torch threads per task for each worker of a cluster: on each host, the CPUs a worker may
    use divided by the task slots of all the workers on that host, so that together they never
    oversubscribe the host's cores."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if _takes_n_workers(client) \
        else client.scheduler_info().get("workers", {})
    cpus = client.run(usable_cpus)
    slots: dict[str, int] = {}
    for info in workers.values():
        slots[info.get("host", "")] = slots.get(info.get("host", ""), 0) + int(info.get("nthreads", 1))
    return {addr: max(1, int(cpus.get(addr, 1)) // max(1, slots.get(info.get("host", ""), 1)))
            for addr, info in workers.items()}


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def plan_local(n_movies: int, cpus: int | None = None, gpu: bool = False, workers: int | None = None,
               torch_threads: int | None = None) -> tuple[int, int]:
    """Workers and torch threads per worker of a local cluster, so that together they fill the
    CPUs without oversubscribing them: ``workers x torch_threads <= cpus``.

    On a GPU one worker feeds it (more would only compete for its memory); on CPUs each worker
    gets :data:`THREADS_PER_WORKER` threads, and no more workers than movies are started.
    """
    cpus = cpus or usable_cpus()
    if workers is None:
        workers = 1 if gpu else max(1, cpus // THREADS_PER_WORKER)
    workers = max(1, min(int(workers), max(1, n_movies)))
    if torch_threads is None:
        torch_threads = max(1, cpus // workers)
    return workers, int(torch_threads)


def _wants_gpu(device: str) -> bool:
    if device.startswith("cuda") or device == "mps":
        return True
    if device != "auto":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def local_cluster(workers: int, torch_threads: int):
    """A ``dask.distributed`` client on a new local cluster of ``workers`` processes of one task
    slot each (a movie at a time), which import this very copy of the package."""
    import logging

    from dask.distributed import Client, LocalCluster

    path = os.pathsep.join([_package_root(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env = {"PYTHONPATH": path, "OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads)}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env=env, silence_logs=logging.ERROR)
    return Client(cluster)


def connect(scheduler: str, timeout: float = 30.0):
    """A client of an existing ``dask.distributed`` scheduler (``tcp://host:8786``, a scheduler file)."""
    from dask.distributed import Client

    try:
        if str(scheduler).endswith(".json") and Path(scheduler).is_file():
            return Client(scheduler_file=str(scheduler), timeout=timeout)
        return Client(scheduler, timeout=timeout)
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start it first, or leave out "
                         "--scheduler to run on a local cluster") from exc


__all__ = ["connect", "local_cluster", "plan_local", "usable_cpus"]
