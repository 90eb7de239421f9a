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
    for name, value, least in (("workers", workers, 1), ("torch threads", torch_threads, 1)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < least):
            raise InputError(f"{name} of a local cluster must be a whole number of at least {least}, not {value!r}")
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


#: address schemes of dask.distributed
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


_SCHEDULER_HINT = ("give the address of a running dask.distributed scheduler (tcp://host:8786) or its scheduler "
                   "file (JSON), or leave out --scheduler to run on a local cluster")


def _scheduler_file(scheduler: str) -> Path | None:
    """The scheduler file ``scheduler`` names, if it names a file (or a .json that should be one)."""
    path = Path(scheduler)
    if path.suffix.lower() == ".json" or path.is_file():
        return path
    return None


def _address_of(scheduler: str) -> str:
    """The address a scheduler file or address names, checked for form (scheme, host, port)."""
    import json

    text = str(scheduler).strip()
    path = _scheduler_file(text) if text else None
    if path is not None:
        try:
            info = json.loads(path.read_text())
            text = str(info["address"])
        except FileNotFoundError:
            raise InputError(f"the scheduler file {path} does not exist; {_SCHEDULER_HINT}") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{path} is not a Dask scheduler file (JSON with an 'address'); "
                             f"{_SCHEDULER_HINT}") from None
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in SCHEMES:
        raise InputError(f"--scheduler {scheduler!r}: unknown address scheme {scheme!r} (known: {', '.join(SCHEMES)}); "
                         f"{_SCHEDULER_HINT}")
    if scheme == "inproc":
        return text
    host, colon, port = rest.rpartition(":")
    if not colon or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise InputError(f"--scheduler {scheduler!r} is not host:port (e.g. tcp://10.1.2.3:8786); {_SCHEDULER_HINT}")
    return f"{scheme}://{rest}"


def check_scheduler(scheduler: str | None, timeout: float = 5.0) -> None:
    """Refuse, before any work, a scheduler that cannot be one: a malformed address, a missing or broken
    scheduler file, or a TCP address where nothing listens."""
    import socket

    if scheduler is None:
        return
    address = _address_of(scheduler)
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address} ({exc.strerror or exc}); start it first, "
                             "or leave out --scheduler to run on a local cluster") from None


def connect(scheduler: str, timeout: float = 30.0):
    """A client of an existing ``dask.distributed`` scheduler (``tcp://host:8786``, a scheduler file).

    The client is made in a thread of its own with a deadline: something listening at the address that is
    not a Dask scheduler (its dashboard's port, a web server) accepts the connection and then never
    answers, and dask's own timeout does not cover that wait.
    """
    import threading

    from dask.distributed import Client

    address = _address_of(scheduler)
    made: dict = {}

    def make():
        try:
            made["client"] = Client(address, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - said below in one line
            made["error"] = exc

    thread = threading.Thread(target=make, name="dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    if thread.is_alive():
        raise InputError(f"nothing at {address} answered as a Dask scheduler within {timeout + 5:.0f} s (is it the "
                         "dashboard's port, or another program?); give the scheduler's own address (tcp://host:8786 "
                         "by default, as `dask scheduler` prints it), or leave out --scheduler to run on a local "
                         "cluster")
    if "error" in made:
        exc = made["error"]
        raise InputError(f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}); start it "
                         "first, or leave out --scheduler to run on a local cluster") from None
    return made["client"]


__all__ = ["check_scheduler", "connect", "local_cluster", "plan_local", "usable_cpus"]
