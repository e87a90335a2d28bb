"""Warm runners: long-lived Ray actors that keep torch imported and datasets loaded
across runs, so a run's fixed cost is a function call, not process spawns.

- :class:`Runner` — a detached actor holding one run's resources (``gpus_per_run``,
  ``cpus_per_run``). It executes the steps of ``workers.pipeline.LocalSteps`` for one run
  at a time, in a *session* per run attempt: the data stay loaded between the steps (and
  in its dataset cache between runs), checkpoints go to the run's storage every epoch.
  Each call streams back the lines it prints, so the run's job log holds its training
  output; the runner writes its epochs and artifacts through a store the run's driver
  opens for it (``SessionOpener``: fenced by the run's attempt, it stops the work of a
  replaced or cancelled attempt at the next epoch).
- :class:`RunnerPool` — one detached actor per cluster that hands runners out by
  resource shape, creates them up to what the cluster holds, and stops idle ones.
- :class:`RunnerSteps` — the pipeline's steps in a run's Ray job driver: each step is a
  call on the runner leased to the run from the pool (one lease for all its steps, so
  drivers started ahead of free resources wait for a runner without cutting in between
  another run's steps); a runner that dies (its node lost) is replaced and the step
  resumes from its last checkpoint. Only the ``tune`` search runs as Ray Tune trials
  (its own actors), with no runner held meanwhile.

Each run stays one Ray job (named, listed in the dashboard, stopped by ``ray job stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import queue
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import ray

from workers.context import RunEnv
from workers.logs import bound, formatter
from workers.measures import CodecRow, RunMeasures, SizeMeasures
from workers.priority import yield_cpu
from workers.spec import RunSpec
from workers.store import LrTrial, RunStore

if TYPE_CHECKING:
    from models.plan import EpochMetrics
    from workers.pipeline import LocalSteps, RangeTestPoints

log = logging.getLogger("aelab.warm")
NAMESPACE = "aelab"
POOL_NAME = "aelab-runner-pool"
MAX_SESSIONS = 1  # a runner serves one run at a time: a new session drops the last
RUNNER_PREFIX = "aelab-runner-"
REAP_EVERY_S = 2.0  # how often the pool looks for idle runners and callers that died
OWNER_CHECK_S = 5.0
WAIT_NOTE_S = 15.0  # a run waiting for a runner says so this often in its log
# A runner not yet placed this long after its creation, while idle runners of other shapes
# hold resources, may not fit where they sit (GPU fractions spread over whole GPUs, or
# resources spread over nodes): the pool then stops one of them, and another each such wait.
PLACE_WAIT_S = 10.0
RUN_NOTE_S = 60.0  # a step running without output says what it is doing this often


class SessionOpener(Protocol):
    """Opens, inside a runner, what one run attempt reports to: (its env, its store).
    Supplied by the service (the run's database, fenced by its attempt)."""

    def __call__(self) -> tuple[RunEnv, RunStore]: ...


class ResourcesUnavailable(RuntimeError):
    """The run asks for more than any node of the cluster has."""


class RunnersKeepDying(RuntimeError):
    """A step lost its runner more often than ``max_trial_failures`` allows."""


@dataclass(frozen=True)
class Shape:
    """What a runner holds, and the settings it runs with (runners of other settings are
    never reused)."""

    gpus: float
    cpus: float
    env_vars: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        raw = json.dumps([self.gpus, self.cpus, list(self.env_vars)])
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


class _Echo:
    """A store that also prints each epoch, into the run's job log."""

    def __init__(self, store: RunStore, total: int) -> None:
        self._store = store
        self._total = total

    def record_epoch(self, metrics: EpochMetrics) -> None:
        """Print the epoch, then record it. Called from a step's checkpoint writer thread
        (``workers.checkpoints.CheckpointWriter``) while the step's thread trains: the
        line goes out in one write, and :class:`_Lines` keeps each thread's lines apart."""
        from models.plan import format_epoch

        sys.stdout.write(format_epoch(metrics, self._total) + "\n")
        sys.stdout.flush()
        self._store.record_epoch(metrics)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _Lines:
    """A text stream cutting what is written into lines for the caller. Threads may
    write at once (a step's thread and its checkpoint writer): each thread's text is cut
    into lines of its own, so their lines never mix."""

    def __init__(self, sink: queue.Queue[object], original: Any) -> None:
        self.sink = sink
        self.original = original
        self.partial: dict[int, str] = {}  # thread id → its line so far
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        me = threading.get_ident()
        with self.lock:
            self.original.write(text)
            *lines, rest = (self.partial.pop(me, "") + text).split("\n")
            if rest:
                self.partial[me] = rest
            for line in lines:
                self.sink.put(line)
        return len(text)

    def flush(self) -> None:
        """Flush the original stream and pass on this thread's unfinished line."""
        with self.lock:
            self.original.flush()
            partial = self.partial.pop(threading.get_ident(), "")
            if partial:
                self.sink.put(partial)

    def drain(self) -> None:
        """Flush, and pass on every thread's unfinished line (when capture ends)."""
        with self.lock:
            self.original.flush()
            partials, self.partial = self.partial, {}
            for partial in partials.values():
                if partial:
                    self.sink.put(partial)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


@contextlib.contextmanager
def _captured(sink: queue.Queue[object]) -> Iterator[logging.Handler]:
    """Standard output, standard error and aelab's log records into ``sink``, line by
    line; yields the log handler (its formatter is set once the run's env is known)."""
    out, err = sys.stdout, sys.stderr
    lines_out, lines_err = _Lines(sink, out), _Lines(sink, err)
    sys.stdout, sys.stderr = lines_out, lines_err  # type: ignore[assignment]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter("text"))
    logging.getLogger("aelab").addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger("aelab").removeHandler(handler)
        lines_out.drain()
        lines_err.drain()
        sys.stdout, sys.stderr = out, err


_DONE = object()


class Runner:
    """A warm worker (use through :class:`RunnerPool`)."""

    def __init__(self, name: str, niceness: int) -> None:
        with contextlib.suppress(Exception):  # a pool gone since: its successor stops us
            ray.get_actor(POOL_NAME, namespace=NAMESPACE).placed.remote(name)
        yield_cpu(niceness)  # training yields the CPU to the API on a shared machine
        import torch  # noqa: F401  (the point: imported once, for every run after)

        import models.training  # noqa: F401

        self.name = name
        self.sessions: OrderedDict[str, LocalSteps] = OrderedDict()

    def ping(self) -> str:
        return self.name

    def _session(self, key: str, opener: SessionOpener, spec: RunSpec) -> LocalSteps:
        if key in self.sessions:
            self.sessions.move_to_end(key)
            return self.sessions[key]
        from workers.pipeline import LocalSteps

        env, store = opener()
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        steps = LocalSteps(replace(env, device=device), persist=True)
        steps.open(spec, _Echo(store, spec.epochs))  # type: ignore[arg-type]
        self.sessions[key] = steps
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return steps

    def call(self, key: str, opener: SessionOpener, spec: RunSpec, method: str,
             args: tuple[Any, ...]) -> Iterator[tuple[str, Any]]:
        """Run ``method`` of the run's session; yields ("started", runner name) as soon as
        the runner begins it, ("log", line)… then ("result", value) or ("error",
        exception). The runner stays leased to the run's driver
        between calls (it hands the runner back)."""
        lines: queue.Queue[object] = queue.Queue()
        outcome: dict[str, Any] = {}
        yield "started", self.name  # the runner is executing the step from now on

        def work() -> None:
            with _captured(lines) as handler:
                try:
                    steps = self._session(key, opener, spec)
                    handler.setFormatter(formatter(steps.env.log_format))  # type: ignore[arg-type]
                    with bound(run_id=steps.env.run_id):
                        outcome["result"] = getattr(steps, method)(*args)
                except BaseException as exc:  # handed to the caller, who raises it
                    log.debug("step %s failed", method, exc_info=True)
                    outcome["error"] = exc
            lines.put(_DONE)

        thread = threading.Thread(target=work, name=f"aelab-{method}", daemon=True)
        thread.start()
        try:
            while (line := lines.get()) is not _DONE:
                yield "log", line
            if method == "finish":
                self.sessions.pop(key, None)
            if "error" in outcome:
                yield "error", outcome["error"]
            else:
                yield "result", outcome["result"]
        finally:
            thread.join()


class RunnerPool:
    """Hands out warm runners by shape (use through :func:`pool`).

    Callers of one shape are served in the order they asked (the dispatcher's order): a
    runner handed back, or room for a new one, goes to the caller that has waited longest,
    not to whichever wakes first or arrives meanwhile (across shapes, room goes to whichever
    caller fits it first). A runner handed out is *leased* to its caller (a run's driver,
    for all the run's steps), whose liveness the pool follows through ``owner`` (an object
    the caller put in Ray: once its owner process is gone, Ray raises ``OwnerDiedError`` on
    it). A runner whose driver died (a run cancelled, a driver killed) is stopped — it may
    still be running that driver's step — and its resources go back to the pool. While a
    run's ``tune`` search is under way, one trial's resources are kept free of new runners
    and runners handed back are stopped rather than kept idle, so that Tune's trials get
    their resources.

    The pool counts resources as sums, which Ray may not be able to place: two runners of
    half a GPU each on two GPUs leave "one GPU" free that a whole-GPU runner cannot take
    (Ray places a GPU fraction on one GPU), as do resources free on several nodes but on
    no one of them. A runner not placed ``PLACE_WAIT_S`` after its creation therefore
    makes the pool stop an idle runner of another shape (one holding GPUs first), and
    another each ``PLACE_WAIT_S`` it still is not (its own start takes seconds)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.runners: dict[str, tuple[Any, Shape]] = {}  # name → (handle, shape)
        self.idle: dict[str, float] = {}  # name → since (monotonic)
        self.unplaced: dict[str, float] = {}  # name → created (monotonic), until placed
        self.leases: dict[str, tuple[str, Any]] = {}  # name → (lease, caller's owner ref)
        self.tuning: dict[str, tuple[Any, float, float]] = {}  # session → (owner, gpus, cpus)
        # Callers waiting in ``acquire``, the longest waiting first: (ticket, shape key).
        self.waiting: list[tuple[object, str]] = []
        self.changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None

    def _start(self) -> None:
        """On first use: stop runners an earlier pool (since died) left behind, since this
        pool cannot know their state; start the reaper."""
        if self._reaper is not None:
            return
        from ray.util import list_named_actors

        for actor in list_named_actors(all_namespaces=True):
            name = actor.get("name", "")
            if actor.get("namespace") == NAMESPACE and name.startswith(RUNNER_PREFIX) \
                    and name != POOL_NAME and name not in self.runners:
                with contextlib.suppress(Exception):
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE))
                    log.info("stopped runner %s left by an earlier pool", name)
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def _capacity(self, shape: Shape) -> int:
        """Runners of ``shape`` the cluster holds next to the other shapes' runners and
        one trial of each search under way. A GPU fraction takes part of one GPU: where
        it is the only fraction, ``floor(1 / fraction)`` share each whole GPU left (three
        runners of 0.6 GPU do not fit on two GPUs, as the sum says)."""
        total = ray.cluster_resources()
        held: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
        others = [(o.gpus, o.cpus) for _, o in self.runners.values() if o.key != shape.key]
        others += [(gpus, cpus) for _, gpus, cpus in self.tuning.values()]
        for gpus, cpus in others:
            held["CPU"] += cpus
            held["GPU"] += gpus
        fits = [(total.get("CPU", 0.0) - held["CPU"]) / shape.cpus]
        if shape.gpus > 0:
            fits.append((total.get("GPU", 0.0) - held["GPU"]) / shape.gpus)
        gpus_total = total.get("GPU", 0.0)
        if 0 < shape.gpus < 1 and gpus_total == round(gpus_total) \
                and not any(0 < gpus < 1 for gpus, _ in others):
            # The only fractions: whole GPUs left times places per GPU. (Beside other
            # fractions, which may share a GPU with it or not, the sum stands, and a
            # runner Ray cannot place makes room: see the reaper.)
            whole = math.floor(gpus_total - held["GPU"] + 1e-9)
            fits.append(whole * math.floor(1 / shape.gpus + 1e-9))
        return max(0, math.floor(min(fits) + 1e-9))

    def _idle_others(self, shape: Shape) -> list[str]:
        """Idle runners of shapes other than ``shape``, the longest idle first."""
        return [n for n in self.idle if self.runners[n][1].key != shape.key]

    def _lease(self, name: str, owner: list[Any]) -> tuple[str, Any, str]:
        lease = uuid.uuid4().hex
        self.leases[name] = (lease, owner[0])
        return name, self.runners[name][0], lease

    async def acquire(self, gpus: float, cpus: float, env_vars: dict[str, str],
                      niceness: int, session: str, owner: list[Any]
                      ) -> tuple[str, Any, str]:
        """A runner of that shape leased to the caller that put ``owner[0]``: (name,
        handle, lease). Waits while the cluster holds no more; gives up (ValueError)
        once the caller is gone."""
        self._start()
        shape = Shape(gpus, cpus, tuple(sorted(env_vars.items())))
        ticket = (object(), shape.key)
        self.waiting.append(ticket)
        try:
            return await self._acquire(shape, niceness, ticket, session, owner)
        finally:
            self.waiting.remove(ticket)
            self.changed.set()  # the next caller of this shape may take what is idle

    async def _acquire(self, shape: Shape, niceness: int, ticket: tuple[object, str],
                       session: str, owner: list[Any]) -> tuple[str, Any, str]:
        gone, ended = asyncio.Event(), asyncio.Event()

        async def watch() -> None:  # the caller's liveness, off the path that hands out
            # ``ended`` too: Python 3.11's wait_for (in _alive) may swallow the cancel.
            while not ended.is_set() and await self._alive(owner[0]):
                await asyncio.sleep(1.0)
            if not ended.is_set():
                gone.set()
                self.changed.set()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            while True:
                if gone.is_set():
                    raise ValueError(f"the driver of {session} is gone")
                # Callers of a shape are served in the order they asked (the dispatcher's):
                # the k-th waiting takes an idle runner if more than k are idle; the first
                # that no idle runner serves takes room for a new one, or makes it.
                rank = [t for t in self.waiting if t[1] == shape.key].index(ticket)
                mine = [n for n in self.idle if self.runners[n][1].key == shape.key]
                if rank < len(mine):  # none while a search is under way: they are stopped
                    del self.idle[mine[0]]
                    return self._lease(mine[0], owner)
                if rank == len(mine):
                    same = sum(1 for _, s in self.runners.values() if s.key == shape.key)
                    if same < self._capacity(shape):
                        name = f"{RUNNER_PREFIX}{uuid.uuid4().hex[:8]}"
                        handle = ray.remote(Runner).options(
                            name=name, namespace=NAMESPACE, lifetime="detached",
                            num_cpus=shape.cpus, num_gpus=shape.gpus, max_restarts=0,
                            runtime_env={"env_vars": dict(shape.env_vars)},
                        ).remote(name, niceness)
                        self.runners[name] = (handle, shape)
                        self.unplaced[name] = time.monotonic()
                        return self._lease(name, owner)
                    others = self._idle_others(shape)
                    if others:  # idle runners of another shape hold what this one needs
                        self._stop(others[0])
                        continue
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), timeout=1.0)
        finally:
            ended.set()
            watcher.cancel()

    def _stop(self, name: str) -> None:
        handle, _ = self.runners.pop(name, (None, None))
        self.idle.pop(name, None)
        self.unplaced.pop(name, None)
        self.leases.pop(name, None)
        if handle is not None:
            with contextlib.suppress(Exception):
                ray.kill(handle)
        self.changed.set()

    def _idle(self, name: str) -> None:
        self.leases.pop(name, None)
        # Handed back, it waits for nobody (its driver had it, placed or not, and its
        # placement, if it ever missed the pool, must not keep stopping other runners).
        self.unplaced.pop(name, None)
        if self.tuning:  # a search waits for resources: give them back now
            self._stop(name)
            return
        self.idle[name] = time.monotonic()
        self.changed.set()

    def _leased_by(self, name: str, lease: str) -> bool:
        return name in self.runners and self.leases.get(name, ("",))[0] == lease

    async def release(self, name: str, lease: str) -> None:
        """The runner leased under ``lease`` is handed back (a lease reclaimed since, its
        driver having died, is ignored)."""
        if self._leased_by(name, lease):
            self._idle(name)

    async def placed(self, name: str) -> None:
        """Runner ``name`` has been placed (its process is starting it)."""
        self.unplaced.pop(name, None)

    async def forget(self, name: str) -> None:
        """A runner that died (or that a caller gave up on)."""
        self._stop(name)

    async def begin_tuning(self, session: str, owner: list[Any], gpus: float, cpus: float,
                           held: tuple[str, str] | None = None) -> None:
        """``session`` starts Tune trials of (``gpus``, ``cpus``) each, handing back the
        runner it ``held`` (name, lease): idle runners are stopped, one trial's resources
        are kept free of new runners, and runners handed back are stopped until
        :meth:`end_tuning` (or its caller's death)."""
        self._start()
        self.tuning[session] = (owner[0], gpus, cpus)
        if held is not None and self._leased_by(*held):
            self._stop(held[0])
        for name in list(self.idle):
            self._stop(name)

    async def end_tuning(self, session: str) -> None:
        self.tuning.pop(session, None)
        self.changed.set()

    async def status(self) -> dict[str, Any]:
        return {"runners": len(self.runners), "idle": len(self.idle),
                "leased": len(self.leases), "tuning": len(self.tuning),
                "unplaced": len(self.unplaced)}

    @staticmethod
    async def _alive(owner: Any) -> bool:
        """False once the process that put ``owner`` is gone."""
        try:
            await asyncio.wait_for(asyncio.wrap_future(owner.future()), OWNER_CHECK_S)
        except ray.exceptions.OwnerDiedError:
            return False
        except Exception:  # slow to answer, or another error: assume alive, check again
            return True
        return True

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            try:
                await self._reap_once()
            except Exception:  # the reaper must outlive any one failure
                log.exception("runner pool: reaping failed; trying again")

    async def _reap_once(self) -> None:
        now = time.monotonic()
        for name, since in list(self.idle.items()):
            if now - since > self.idle_s:
                log.info("stopping idle runner %s", name)
                self._stop(name)
        for name, since in list(self.unplaced.items()):
            if name not in self.runners or now - since <= PLACE_WAIT_S:
                continue
            shape = self.runners[name][1]
            others = self._idle_others(shape)
            if shape.gpus > 0:  # runners holding GPUs first: they hold what it lacks
                others.sort(key=lambda n: self.runners[n][1].gpus == 0)
            if others:
                log.info("runner %s is not placed %.0f s after its creation or the last "
                         "room made; stopping idle runner %s of another shape to make room",
                         name, now - since, others[0])
                self._stop(others[0])
                # Its own start takes seconds more: wait for it before stopping another.
                self.unplaced[name] = now
        for name, (lease, owner) in list(self.leases.items()):
            if not await self._alive(owner) and self._leased_by(name, lease):
                log.info("runner %s: its driver is gone; stopping it", name)
                self._stop(name)
        for session, (owner, _, _) in list(self.tuning.items()):
            if not await self._alive(owner):
                self.tuning.pop(session, None)
                self.changed.set()


class StepAnswers(Protocol):
    """The stream of one step's answers (see :meth:`Runner.call`)."""

    def ready(self, timeout: float) -> bool:
        """True once the next answer (or the stream's end) is there, within ``timeout``
        seconds."""

    def next(self) -> tuple[str, Any]:
        """The next answer; StopIteration at the stream's end."""


class _RayAnswers:
    """A Ray streaming generator's answers."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def ready(self, timeout: float) -> bool:
        return bool(ray.wait([self.generator], timeout=timeout)[0])

    def next(self) -> tuple[str, Any]:
        return ray.get(next(self.generator))  # type: ignore[no-any-return]


def follow_step(answers: StepAnswers, *, runner: str, method: str,
                printer: Callable[[str], None], waiting: Callable[[float, str], str],
                clock: Callable[[], float] = time.monotonic) -> Any:
    """Follow one step on the run's leased runner to its result (re-raising its error),
    printing its lines into the run's log and saying what happens meanwhile: until the
    runner begins the step (its actor still being placed, or busy) it *waits* — every
    ``WAIT_NOTE_S`` the note ``waiting(seconds, what)`` (what the cluster has free); once
    it has begun, the step *runs*: a line when it starts and ends (with its seconds), and
    every ``RUN_NOTE_S`` without output, how long it has run and its last output line
    (its progress, where the step prints one). ``clock`` in seconds."""
    started: float | None = None
    waited = 0.0
    last_line: str | None = None
    quiet_since = clock()

    def begin() -> float:
        printer(f"aelab: {method} started on runner {runner}")
        return clock()

    while True:
        if started is None:
            if not answers.ready(WAIT_NOTE_S):
                waited += WAIT_NOTE_S
                printer(waiting(waited, f"runner {runner} to start {method}"))
                continue
        else:
            silent = clock() - quiet_since
            if not answers.ready(max(0.0, RUN_NOTE_S - silent)):
                now = clock()
                progress = f"; last output: {last_line}" if last_line else \
                    "; no output yet"
                printer(f"aelab: {method} running on runner {runner} for "
                        f"{now - started:.0f} s{progress}")
                quiet_since = now
                continue
        try:
            kind, value = answers.next()
        except StopIteration:
            raise RuntimeError(f"runner {runner} ended {method} without an answer") from None
        if started is None:  # any answer means the runner has begun
            started = begin()
        quiet_since = clock()
        if kind == "started":
            continue
        if kind == "log":
            printer(value)
            if value.strip():
                last_line = value.strip()
            continue
        elapsed = clock() - started
        if kind == "error":
            printer(f"aelab: {method} failed on runner {runner} after {elapsed:.0f} s")
            raise value
        printer(f"aelab: {method} done on runner {runner} in {elapsed:.0f} s")
        return value


def pool(idle_s: float = 600.0) -> Any:
    """The cluster's runner pool (created on first use, on the head node, detached)."""
    return ray.remote(RunnerPool).options(
        name=POOL_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=1000,
        resources={"node:__internal_head__": 0.001}).remote(idle_s)


class RunnerSteps:
    """The pipeline's steps for one run attempt, executed on warm runners."""

    kind = "ray"

    def __init__(self, env: RunEnv, *, gpus: float, cpus: float, opener: SessionOpener,
                 session: str, env_vars: dict[str, str], idle_s: float = 600.0,
                 printer: Callable[[str], None] = lambda line: print(line, flush=True),
                 wait_for_nodes: bool = False) -> None:
        self.env = env
        # Asked for a resource no node joined now has at all (GPUs on a GPU cluster whose
        # GPU nodes are away): wait for such a node rather than fail the run.
        self.wait_for_nodes = wait_for_nodes
        self.gpus = gpus
        self.cpus = cpus
        self.opener = opener
        self.session = session
        self.env_vars = env_vars
        self.idle_s = idle_s
        self.pool = pool(idle_s)
        # Owned by this process: the pool takes a lease back once this process is gone.
        self.owner = [ray.put(None)]
        self.printer = printer
        self.clock: Callable[[], float] = time.monotonic
        self.spec: RunSpec | None = None
        self.store: RunStore | None = None
        # The runner leased to this run attempt, (name, handle, lease): kept from step to
        # step, so that no other run takes it between them and the run's session (data,
        # model) stays on it; handed back for a Tune search and at the end.
        self.leased: tuple[str, Any, str] | None = None
        # For timings.json: seconds waited for a runner (all leases), when the first came.
        self.marks: dict[str, float] = {"runner_wait_s": 0.0}

    def _lease(self, method: str) -> tuple[str, Any, str]:
        """The runner leased to this run, leasing one if none is (a pool that died since is
        looked up again: the next one is created on demand)."""
        for tries in range(3):
            if self.leased is not None:
                break
            acquired = self.pool.acquire.remote(
                self.gpus, self.cpus, self.env_vars, self.env.niceness, self.session,
                self.owner)
            asked = time.monotonic()
            self._wait(acquired, f"a runner for {method}")
            try:
                self.leased = ray.get(acquired)
                self.marks["runner_wait_s"] += time.monotonic() - asked
                self.marks.setdefault("runner_leased_unix", time.time())
            except ray.exceptions.RayActorError:
                if tries == 2:
                    raise
                self.printer("aelab: the runner pool was lost; asking its successor")
                self.pool = pool(self.idle_s)
        assert self.leased is not None
        return self.leased

    def _call(self, method: str, *args: Any, reacquire: bool = True) -> Any:
        """``method`` of the run's session on its runner; a runner lost meanwhile is
        replaced (the step resumes from its last checkpoint) unless not ``reacquire``."""
        assert self.spec is not None
        failures = 0
        while True:
            name, runner, _ = self._lease(method)
            try:
                answers = runner.call.remote(self.session, self.opener, self.spec, method,
                                             args)
                return follow_step(_RayAnswers(answers), runner=name, method=method,
                                   printer=self.printer, waiting=self._waiting_note,
                                   clock=self.clock)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                self.leased = None
                self.pool.forget.remote(name)
                if not reacquire:
                    raise
                failures += 1
                if failures > self.env.max_trial_failures:
                    raise RunnersKeepDying(f"the run lost its runner {failures} times "
                                           f"({type(exc).__name__}); last in {method}") from exc
                self.printer(f"aelab: runner {name} was lost during {method} "
                             f"({type(exc).__name__}); resuming on another")

    def _wait(self, waitable: Any, what: str) -> None:
        """Block until ``waitable`` (an object ref) is ready, saying in the run's log every
        ``WAIT_NOTE_S`` what it waits for and what the cluster has free, so a run queued
        behind others is never silent."""
        waited = 0.0
        while not ray.wait([waitable], timeout=WAIT_NOTE_S)[0]:
            waited += WAIT_NOTE_S
            self.printer(self._waiting_note(waited, what))

    def _waiting_note(self, waited: float, what: str) -> str:
        free = ray.available_resources()
        return (f"aelab: waiting {waited:.0f} s for {what} ({self.gpus:g} GPU, "
                f"{self.cpus:g} CPU); the cluster has {free.get('GPU', 0.0):g} GPU, "
                f"{free.get('CPU', 0.0):g} CPU free")

    def open(self, spec: RunSpec, store: RunStore) -> None:
        self.spec = spec
        self.store = store

    def prepare(self, spec: RunSpec, classifier_ready: bool) -> None:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        for resource, asked, field in (("CPU", self.cpus, "cpus_per_run"),
                                       ("GPU", self.gpus, "gpus_per_run")):
            most = max((r.get(resource, 0.0) for r in nodes), default=0.0)
            if asked > most and most == 0 and self.wait_for_nodes:
                self.printer(f"aelab: no node joined now has a {resource}; this run waits "
                             f"for one with {asked:g}")
            elif asked > most:
                raise ResourcesUnavailable(
                    f"resources.{field} {asked:g} exceeds every node of this Ray cluster "
                    f"(at most {most:g} {resource}s on one node): lower it or add a node")
        self._call("prepare", spec, classifier_ready)

    def phase1(self, spec: RunSpec) -> str:
        return self._call("phase1", spec)  # type: ignore[no-any-return]

    def range_test(self, spec: RunSpec, start: str | None) -> RangeTestPoints:
        return self._call("range_test", spec, start)  # type: ignore[no-any-return]

    def tune_trials(self, spec: RunSpec, start: str | None, budget: int
                    ) -> list[tuple[float, list[float]]]:
        from workers.lr_search import run_tune_trials

        # Trials are Tune's own actors: runners give their resources back meanwhile (this
        # run's own with the same call, so that no waiting run takes it first).
        held = (self.leased[0], self.leased[2]) if self.leased is not None else None
        self.leased = None
        ray.get(self.pool.begin_tuning.remote(self.session, self.owner, self.gpus,
                                              self.cpus, held))
        try:
            return run_tune_trials(spec, self.env, start, budget, gpus=self.gpus,
                                   cpus=self.cpus)
        finally:
            self.pool.end_tuning.remote(self.session)

    def train(self, spec: RunSpec, lr: float, start: str | None) -> None:
        self._call("train", spec, lr, start)

    def train_classifier(self, spec: RunSpec) -> tuple[bytes, float]:
        return self._call("train_classifier", spec)  # type: ignore[no-any-return]

    def evaluate(self, spec: RunSpec, classifier: bytes | None,
                 original_accuracy: float | None
                 ) -> tuple[RunMeasures, list[CodecRow], list[SizeMeasures]]:
        return self._call("evaluate", spec, classifier,  # type: ignore[no-any-return]
                          original_accuracy)

    def hand_back(self) -> None:
        """Hand the run's runner back to the pool while the run waits on another run; the
        next step leases one again (the same one if still idle) and resumes from the
        run's checkpoints in its storage."""
        if self.leased is not None:
            self.printer(f"aelab: runner {self.leased[0]} handed back while this run "
                         "waits for the reference classifier another run is training")
        self._hand_back()

    def finish(self) -> None:
        from workers.checkpoints import CheckpointStorage

        if self.spec is not None and self.leased is not None:  # its session is there
            with contextlib.suppress(Exception):
                self._call("finish", reacquire=False)
        self._hand_back()
        CheckpointStorage(self.env).remove()

    def _hand_back(self) -> None:
        if self.leased is not None:
            name, _, lease = self.leased
            self.leased = None
            self.marks["runner_released_unix"] = time.time()  # the last hand-back
            # Waited for: a call still queued when the driver exits is lost, and the pool
            # would then stop the runner (its driver gone) instead of keeping it warm.
            with contextlib.suppress(Exception):
                ray.get(self.pool.release.remote(name, lease), timeout=30)


__all__ = ["LrTrial", "ResourcesUnavailable", "Runner", "RunnerPool", "RunnerSteps",
           "RunnersKeepDying", "SessionOpener", "StepAnswers", "follow_step", "pool"]
