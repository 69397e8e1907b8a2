"""``InferenceService``: the transport-neutral operations the REST and gRPC faces call.

Live, ready, metadata, model readiness, infer, status and the repository index, over one
``Repository``. Request metrics are recorded here. A request's model runs on a thread
pool, never on the event loop; the lease is taken in the same hop. Error messages leave
through ``public`` only, which names paths relative to the repository root.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from keepwarm.control import ControlledSource
from keepwarm.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidInputError,
    KeepwarmError,
    ModelNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from keepwarm.metrics import Metrics
from keepwarm.repository import Repository
from keepwarm.signature import Signature

T = TypeVar("T")
Decode = Callable[[Signature], dict[str, np.ndarray]]
Encode = Callable[[str, int, dict[str, np.ndarray]], T]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # as the repository's directories
_SETTLING = ("NEW", "LOADING", "WARMING")
RETRY_AFTER_SECONDS = 1
#: Threads that run models (to be sized by the batching issue's executors).
DEFAULT_WORKERS = min(32, 2 * (os.cpu_count() or 1) + 2)


@dataclass(slots=True)
class _Stat:
    """Triton-style counters of one version (durations in nanoseconds)."""

    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    last_ms: int = 0

    def to_dict(self, name: str, version: str) -> dict[str, Any]:
        def duration(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        zero = duration(0, 0)
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_ms,
            "inference_count": self.success,
            "execution_count": self.success,
            "inference_stats": {
                "success": duration(self.success, self.success_ns),
                "fail": duration(self.fail, self.fail_ns),
                "queue": zero,
                "compute_input": zero,
                "compute_infer": duration(self.success, self.success_ns),
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
        }


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: int
    versions: list[int]  # every READY version
    signature: Signature


def check_name(name: str, what: str = "model name") -> str:
    """Names are letters, digits, ``_``, ``-`` and ``.``: no separators, no ``..``."""
    if not _NAME.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise InvalidInputError(
            f"invalid {what} {shown!r}: use letters, digits, '_', '-' and '.' "
            "(starting with a letter or digit; no '/' and no '..'; at most 128 characters)"
        )
    return name


def parse_version(version: str | None) -> int | str | None:
    """``None`` or ``""``: the default version; digits: a version number; else a label."""
    if version is None or version == "":
        return None
    if version.isdigit():
        number = int(version)
        if number <= 0:
            raise InvalidInputError(f"version {version!r}: versions are positive integers")
        return number
    return check_name(version, "version label")


class InferenceService:
    """See the module docstring. ``close()`` stops the thread pool (not the repository)."""

    def __init__(
        self,
        repository: Repository,
        *,
        metrics: Metrics | None = None,
        default_timeout: float | None = None,
        strict_readiness: bool = False,
        workers: int = DEFAULT_WORKERS,
        control: ControlledSource | None = None,
        management_token: str | None = None,
        load_timeout: float = 300.0,
    ) -> None:
        self.repository = repository
        self.control = control
        self._token = management_token
        self.load_timeout = load_timeout
        self.metrics = metrics if metrics is not None else Metrics()
        self.default_timeout = default_timeout
        self.strict_readiness = strict_readiness
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="keepwarm-infer")
        self._roots = _root_spellings(repository.root)
        self._draining = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None  # made on the loop, when first draining
        self._stats: dict[tuple[str, str], _Stat] = {}

    # ------------------------------------------------------------------ health

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once every wanted version is READY or FAILED (FAILED blocks readiness
        with ``strict_readiness``), and until shutdown begins."""
        if self._draining:
            return False
        blocking = (*_SETTLING, "FAILED") if self.strict_readiness else _SETTLING
        status = self.repository.status()
        return not any(
            info.get("state") in blocking
            for model in status.values()
            for info in model["versions"].values()
        )

    def server_metadata(self) -> dict[str, Any]:
        from keepwarm import __version__

        return {
            "name": "keepwarm",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository", "statistics"],
        }

    # ------------------------------------------------------------------ models

    def versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, state, reason) for each version of ``name``, oldest first; a model
        the repository API holds unloaded has none (``held`` says why)."""
        if self.held(name) is not None:
            return []
        model = self._model_status(name)
        return [
            (version, info.get("state", "UNKNOWN"), self.public(info.get("reason") or ""))
            for version, info in sorted(model["versions"].items())
        ]

    def model_ready(self, name: str, version: str | None) -> bool:
        wanted = parse_version(version)
        states = {v: state for v, state, _ in self.versions(name)}
        if isinstance(wanted, int):
            if wanted not in states:
                raise ModelNotFoundError(f"model {name!r} has no version {wanted}")
            return states[wanted] == "READY"
        return "READY" in states.values()

    async def model_info(self, name: str, version: str | None) -> ModelInfo:
        """The signature of the version a request for ``name``/``version`` would get."""

        def run(model: Any) -> ModelInfo:
            ready = [v for v, state, _ in self.versions(name) if state == "READY"]
            return ModelInfo(model.name, model.version, ready, model.signature)

        return await self._leased(name, version, self.default_timeout, run)

    def _count(self, name: str, version: str, ok: bool, seconds: float) -> None:
        stat = self._stats.get((name, version))
        if stat is None:
            stat = self._stats[(name, version)] = _Stat()
        ns = int(seconds * 1e9)
        if ok:
            stat.success += 1
            stat.success_ns += ns
        else:
            stat.fail += 1
            stat.fail_ns += ns
        stat.last_ms = int(time.time() * 1000)

    def statistics(self, name: str | None, version: str | None) -> list[dict[str, Any]]:
        """Triton's statistics extension: every version of ``name`` (or of every model)."""
        if name is None:
            wanted = [
                (n, str(v)) for n, m in self.repository.status().items() for v in m["versions"]
            ]
        else:
            number = parse_version(version)
            wanted = [
                (name, str(v))
                for v, _, _ in self.versions(name)
                if number is None or (isinstance(number, int) and v == number)
            ]
        return [self._stats.get(key, _Stat()).to_dict(*key) for key in wanted]

    def held(self, name: str) -> str | None:
        """Why the repository API keeps ``name`` unloaded, or None."""
        return None if self.control is None else self.control.held().get(check_name(name))

    def index(self) -> list[dict[str, Any]]:
        """The repository extension's index: every model version and its state."""
        held = {} if self.control is None else self.control.held()
        out: list[dict[str, Any]] = [
            {"name": name, "state": "UNAVAILABLE", "reason": why} for name, why in held.items()
        ]
        for name, model in self.repository.status().items():
            if not model["versions"]:
                out.append({"name": name, "state": "UNAVAILABLE", "reason": "no versions"})
            for version, info in sorted(model["versions"].items()):
                out.append(
                    {
                        "name": name,
                        "version": str(version),
                        "state": info.get("state", "UNKNOWN"),
                        "reason": self.public(info.get("reason") or ""),
                    }
                )
        return out

    def _model_status(self, name: str) -> dict[str, Any]:
        check_name(name)
        model = self.repository.status().get(name)
        if model is None:
            raise ModelNotFoundError(f"model {name!r} not found in the repository")
        return model  # type: ignore[no-any-return]

    # ------------------------------------------------------------------- infer

    async def infer(
        self,
        name: str,
        version: str | None,
        decode: Decode,
        encode: Encode[T],
        *,
        protocol: str,
        timeout: float | None = None,
    ) -> T:
        """Run one request: lease the version, ``decode`` the inputs against its signature,
        predict, ``encode`` the outputs; all on a worker thread. ``timeout`` (seconds,
        default: the service's) bounds the wait for the model and the queue."""
        started = time.perf_counter()
        label, code = "", "OK"  # the version label only once a version answered
        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            if self._draining:
                raise UnavailableError("the server is shutting down; retry on another server")

            def run(model: Any) -> T:
                nonlocal label
                label = str(model.version)
                outputs = model.predict(decode(model.signature))
                return encode(model.name, model.version, outputs)

            return await self._leased(name, version, timeout, run)
        except KeepwarmError as exc:
            code = exc.code.value
            raise
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            if label:  # the request reached a version
                self.metrics.request(name, label, protocol, code, elapsed)
                self._count(name, label, code == "OK", elapsed)
            else:  # names not served are not labels: clients must not grow the series
                self.metrics.request("", "", protocol, code, elapsed)
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def _leased(
        self, name: str, version: str | None, timeout: float | None, run: Callable[[Any], T]
    ) -> T:
        """``run(leased_model)`` on a worker thread under a lease; errors made public.

        The seam with the core: the lease is taken on the worker thread with the blocking
        ``lease``; core's ``acquire_async`` (awaited here, then one hop for ``run``) keeps
        a waiting request from holding a thread."""
        why = self.held(name)
        if why is not None:
            raise UnavailableError(
                f"model {name!r} is {why}; load it with POST /v2/repository/models/{name}/load"
            )
        wanted = parse_version(version)
        seconds = self.default_timeout if timeout is None else timeout
        deadline = None if seconds is None else time.monotonic() + seconds

        def work() -> T:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceededError(f"the request's deadline ({seconds:g} s) passed")
            with self.repository.lease(name, wanted, timeout=remaining) as model:
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceededError(
                        f"the request's deadline ({seconds:g} s) passed before it could run"
                    )
                return run(model)

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work)
        except KeepwarmError as exc:
            raise self._scrubbed(exc) from None
        except Exception as exc:
            raise self._translated(name, exc) from None

    def _translated(self, name: str, exc: Exception) -> KeepwarmError:
        # A framework's own refusal of an input the signature allowed (say, a wrong size
        # on an axis the signature leaves open) is the caller's error; anything else a bug.
        text = self.public(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        if type(exc).__name__ in ("InvalidArgumentError", "InvalidArgument", "Fail"):
            return InvalidInputError(f"model {name!r} refused the input: {text}")
        return InternalError(f"model {name!r} failed: {type(exc).__name__}: {text}")

    def _scrubbed(self, exc: KeepwarmError) -> KeepwarmError:
        message = self.public(exc.message)
        if message != exc.message:
            exc.message = message
            exc.args = (message,)
        return exc

    def public(self, text: str) -> str:
        """``text`` with the repository root's absolute path replaced: files are named
        relative to the root, the root itself as "the repository"."""
        for root in self._roots:
            text = text.replace(root + os.sep, "").replace(root, "the repository")
        return text

    # -------------------------------------------------------------- management

    def authorize(self, presented: str | None) -> None:
        """Allow a repository API call: the API must be on and ``presented`` the token
        (compared in constant time)."""
        if self._token is None or self.control is None:
            raise PermissionDeniedError(
                "the repository API is off; start the server with --management-api and a "
                "token (KEEPWARM_MANAGEMENT_TOKEN or --token-file)"
            )
        if not presented:
            raise UnauthenticatedError(
                "the repository API needs the management token: 'Authorization: Bearer TOKEN'"
            )
        if not hmac.compare_digest(presented.encode(), self._token.encode()):
            raise PermissionDeniedError("the management token is wrong")

    async def load(self, name: str, presented: str | None) -> None:
        """Serve ``name`` (again); returns once it can serve, or raises why not."""
        self.authorize(presented)
        assert self.control is not None
        self.control.load(check_name(name))
        await asyncio.to_thread(self.repository.refresh)
        try:
            await asyncio.to_thread(self.repository.wait_ready, name, None, self.load_timeout)
        except KeepwarmError as exc:
            raise self._scrubbed(exc) from None

    async def unload(self, name: str, presented: str | None) -> None:
        """Stop serving ``name`` (its versions drain) until it is loaded again."""
        self.authorize(presented)
        assert self.control is not None
        self.control.unload(check_name(name))
        await asyncio.to_thread(self.repository.refresh)

    # ---------------------------------------------------------------- shutdown

    def begin_shutdown(self) -> None:
        """Readiness fails at once and new inference requests are refused; requests
        already received complete."""
        self._draining = True
        self._idle = asyncio.Event()
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """After ``begin_shutdown``: wait until no request is in flight; False on timeout."""
        assert self._idle is not None, "begin_shutdown first"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def shutting_down(self) -> bool:
        return self._draining

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _root_spellings(root: str) -> list[str]:
    """The root as given, absolute, and resolved (longest first, so that the most
    specific spelling is replaced before a prefix of it)."""
    if "://" in root and not root.startswith("file://"):
        return [root.rstrip("/")]
    path = Path(root.removeprefix("file://")).expanduser()
    spellings = {str(path), str(path.absolute()), str(path.resolve())}
    return sorted(
        (s.rstrip(os.sep) for s in spellings if s not in ("", os.sep)), key=len, reverse=True
    )
