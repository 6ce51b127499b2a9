"""Run a pipeline's chunks as Ray tasks, on a local Ray instance or an existing cluster.

Only *where* a chunk runs changes. Each task calls the same ``process_chunk`` as the local
process pool, so it writes its own shards (temporary name, fsync, rename), its quarantine part
and, last, its done-marker; the driver gets back a ``ChunkResult`` (counts, content hashes and
shard records), never token lists. Chunk planning, ``--resume`` and the manifest stay in
``sftdata.runner``, which is why the output is byte-identical to ``--executor local``.

Two things differ from the process pool, and both are handled here:

- Ray re-runs a task whose worker process (or node) died, up to ``MAX_RETRIES`` times. The dead
  attempt may have committed some of its shards, or even its done-marker, before dying, so every
  attempt first removes whatever an earlier attempt of *its* chunk left behind; a retry then
  writes exactly what a clean run writes. Python exceptions are not retried: they are bugs or
  bad input/output paths, and a retry would fail the same way.
- Output is written by the workers, wherever they run: the output must be a place every node
  reaches under the same name, either a shared filesystem path (NFS, or a single machine) or a
  pyarrow filesystem URI such as ``s3://bucket/prefix``, where each task writes on its node's
  local staging folder and uploads. See ``docs/ray.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from sftdata.errors import RunError
from sftdata.executors.base import Executor, ExecutorFailure, Task
from sftdata.process.chunk import clean_chunk_leftovers
from sftdata.stages.read.jsonl import Chunk

MAX_RETRIES = 3
IN_FLIGHT_PER_WORKER = 2  # enough queued work to hide scheduling latency, little enough to bound memory
KILL_ONCE_ENV = "SFTDATA_RAY_KILL_ONCE"
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _kill_once(marker: str | None) -> None:
    """Test hook: the first attempt to reach this point, across the whole run, SIGKILLs itself.

    ``SFTDATA_RAY_KILL_ONCE=<path>`` is read by the driver and handed to every task, so it works
    on a remote cluster too. The marker file is created atomically (``O_EXCL``): exactly one
    task attempt dies, after committing its chunk's shards and done-marker but before returning,
    which is the worst moment for a retry. Ray's retry then sees the marker and survives.
    """
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def run_task(task: Task, chunk: Chunk, kill_once: str | None = None) -> Any:
    """The body of one Ray task: undo earlier attempts of this chunk, then the task itself."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    prepare = getattr(task, "prepare", None)
    if prepare is not None:
        prepare(chunk)
    result = task(chunk)
    _kill_once(kill_once)
    return result


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RunError("--executor ray needs Ray: pip install 'sftdata[ray]'") from exc
    return ray


@contextlib.contextmanager
def _loopback_only(ray: Any) -> Iterator[None]:
    """Make a local instance listen on 127.0.0.1 only, for as long as it is being started.

    A local instance is one node that nothing else needs to reach, yet Ray binds its servers to
    the machine's network address (it rewrites ``127.0.0.1`` to it). Ray's own single-node switch
    (the one it uses on Windows and macOS) keeps every server on loopback: child processes read
    it from the environment, this process from ``ray_constants``. Both are restored afterwards so
    a later ``ray.init(address=...)`` in this process can still join a real cluster. A value the
    user set is respected.
    """
    if _SINGLE_NODE_ENV in os.environ:
        yield
        return
    consts = getattr(getattr(ray, "_private", None), "ray_constants", None)
    had_const = consts is not None and hasattr(consts, "ENABLE_RAY_CLUSTER")
    old_const = consts.ENABLE_RAY_CLUSTER if had_const else None
    os.environ[_SINGLE_NODE_ENV] = "0"
    if had_const:
        consts.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        os.environ.pop(_SINGLE_NODE_ENV, None)
        if had_const:
            consts.ENABLE_RAY_CLUSTER = old_const


def _unreachable(address: str, timeout: float = 10.0) -> str | None:
    """Why a plain ``host:port`` address refuses connections, else None.

    ``ray.init`` keeps retrying an address where nothing listens, for minutes, printing warnings;
    one TCP connect turns a typo into an immediate, clear error. Other address forms (``auto``,
    ``ray://...``) are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _connect(ray: Any, address: str | None, max_workers: int) -> bool:
    """Join ``address`` or start a local instance; True when this call connected (and must close).

    ``ray.shutdown()`` on a joined cluster only disconnects this driver (its job ends, the
    cluster keeps running); on a local instance it stops the instance.
    """
    if ray.is_initialized():  # called from inside a Ray driver: use its connection, leave it open
        return False
    common: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address:
        why = _unreachable(address)
        if why:
            raise RunError(f"cannot join the Ray cluster at {address}: {why} (is `ray start --head` "
                           "running there, and is the port right?)")
        try:
            ray.init(address=address, **common)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types here; all mean "cannot join"
            raise RunError(f"cannot join the Ray cluster at {address}: {type(exc).__name__}: "
                           f"{_first_line(exc)}") from exc
        return True
    # "local", not None: None would join whatever cluster `ray start` last left on this machine.
    with _loopback_only(ray):
        ray.init(address="local", num_cpus=max_workers, **common)
    return True


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _failure(ray: Any, chunk: Chunk, exc: BaseException) -> ExecutorFailure:
    if isinstance(exc, ray.exceptions.RayTaskError):  # the task raised: report its exception
        cause = getattr(exc, "cause", None) or exc
        why = f"{type(cause).__name__}: {_first_line(cause)}"
    elif isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        why = f"its worker died {MAX_RETRIES + 1} times (killed by a signal, out of memory or node lost)"
    else:
        why = f"{type(exc).__name__}: {_first_line(exc)}"
    return ExecutorFailure(why, chunk, "on Ray")


class RayExecutor(Executor):
    """Tasks on a local Ray instance or an existing cluster.

    ``address`` (else ``RAY_ADDRESS``) joins that cluster, and disconnects at the end while the
    cluster keeps running; without either, a local instance with ``workers`` CPUs is started and
    shut down at the end. A caller already connected to Ray keeps its connection. At most
    ``IN_FLIGHT_PER_WORKER * workers`` tasks are submitted at once, so the driver's and the
    object store's memory stay bounded whatever the number of chunks. The task itself is put in
    the object store once, not once per chunk.
    """

    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None) -> None:
        super().__init__(workers)
        self.address = address

    def map(self, task: Task, chunks: Sequence[Chunk]) -> Iterator[Any]:
        if not chunks:
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = _import_ray()
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        connected = _connect(ray, address, self.workers)
        pending: dict[Any, Chunk] = {}
        try:
            remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(run_task)
            task_ref = ray.put(task)
            kill_once = os.environ.get(KILL_ONCE_ENV) or None
            limit = max(1, IN_FLIGHT_PER_WORKER * self.workers)
            todo = iter(chunks)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < limit:
                    chunk = next(todo, None)
                    if chunk is None:
                        exhausted = True
                        break
                    pending[remote.remote(task_ref, chunk, kill_once)] = chunk
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    chunk = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise _failure(ray, chunk, exc) from exc
                    yield result
        finally:
            for ref in pending:  # a failed or abandoned run must not keep the cluster busy
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if connected:
                ray.shutdown()


__all__ = ["RayExecutor", "clean_chunk_leftovers", "run_task", "MAX_RETRIES"]
