"""The Ray cluster lancefeed's distributed work runs on: the one already joined, the one
at an address, or a local one sized to this machine, started for the work and stopped
after it.

Ray is optional (``pip install "lancefeed[ray]"``); nothing here imports it before it
is asked for, so the rest of lancefeed never pays its import.

Example:
    >>> with ray_session(None) as ray:  # doctest: +SKIP
    ...     cluster_cpus(ray)
    2
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

__all__ = ["ENGINES", "check_engine", "cluster_cpus", "import_ray", "local_object_store_bytes", "node_cpus",
           "quiet_ray_data", "ray_session"]

# "threads": the training machine's own thread pool; "ray": Ray Data tasks on a cluster.
ENGINES = ("threads", "ray")
# A local Ray's shared-memory object store. Only task arguments and small results (item
# lists, fragment metadata) pass through it, never image bytes in bulk; Ray's default
# (30% of RAM, taken from /dev/shm) would hold several GB of the machine for nothing.
_OBJECT_STORE_CAP = 1 << 30
_OBJECT_STORE_MIN = 100 << 20


def check_engine(engine: str) -> str:
    """``engine`` if it is one of :data:`ENGINES`, else ``ValueError`` naming them.

    Example:
        >>> check_engine("ray")
        'ray'
        >>> check_engine("spark")
        Traceback (most recent call last):
        ...
        ValueError: engine must be one of threads, ray; got 'spark'
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    return engine


def import_ray() -> Any:
    """The ``ray`` module with Ray Data loaded, or ``ImportError`` saying how to install it.

    Example:
        >>> import_ray().__name__  # doctest: +SKIP
        'ray'
    """
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data comes with the ray[data] extra)
    except ImportError as exc:
        raise ImportError(
            f'engine="ray" needs Ray Data ({exc}); install it with pip install "lancefeed[ray]" '
            '(or pip install "ray[data]")'
        ) from None
    return ray


def local_object_store_bytes() -> int:
    """The object store a local Ray started by lancefeed gets: a tenth of the memory,
    at most 1 GiB.

    Example:
        >>> 100 << 20 <= local_object_store_bytes() <= 1 << 30
        True
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return max(_OBJECT_STORE_MIN, min(_OBJECT_STORE_CAP, total // 10))


def _package_root() -> str:
    """The folder holding the ``lancefeed`` package the driver imported."""
    return str(Path(__file__).resolve().parent.parent)


def _worker_env() -> dict:
    """The local workers import the driver's lancefeed, not another one installed: a
    task and its driver must agree on every per-row function."""
    path = os.environ.get("PYTHONPATH", "")
    return {"env_vars": {"PYTHONPATH": _package_root() + (os.pathsep + path if path else "")}}


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, *, num_cpus: Optional[int] = None) -> Iterator[Any]:
    """The ``ray`` module, connected for the ``with`` block.

    A Ray already initialised in this process is used as it is (and left running). An
    ``address`` (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) is joined, and left
    after the block; lancefeed must be installed on that cluster's nodes. Without
    either, a local Ray is started with ``num_cpus`` (default: this machine's cores)
    and a capped object store (:func:`local_object_store_bytes`), and stopped after.

    Example:
        >>> with ray_session(None) as ray:  # doctest: +SKIP
        ...     ray.cluster_resources()["CPU"]
        2.0
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    with warnings.catch_warnings():
        # Ray starts its processes by fork + exec; Lance, if imported already, warns in the
        # child that it is not fork-safe, which does not concern a process about to exec.
        warnings.filterwarnings("ignore", message="lance is not fork-safe")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=local_object_store_bytes(), log_to_driver=False, runtime_env=_worker_env())
    try:
        yield ray
    finally:
        ray.shutdown()


def quiet_ray_data(ray: Any) -> None:
    """Turn off Ray Data's own progress bars and per-pass log lines: lancefeed shows one
    bar of files or rows instead.

    Example:
        >>> with ray_session(None) as ray:  # doctest: +SKIP
        ...     quiet_ray_data(ray)
    """
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def node_cpus(ray: Any) -> int:
    """The CPUs of the cluster's largest live node (at least 1): the most one task can
    reserve.

    Example:
        >>> with ray_session(None) as ray:  # doctest: +SKIP
        ...     node_cpus(ray)
        2
    """
    cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive", True)]
    return max(1, int(max(cpus, default=1)))


def cluster_cpus(ray: Any) -> int:
    """The CPUs of the cluster ``ray`` is connected to (at least 1).

    Example:
        >>> with ray_session(None) as ray:  # doctest: +SKIP
        ...     cluster_cpus(ray)
        2
    """
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
