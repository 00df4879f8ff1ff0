"""What a job function can say about how its job ended, and how functions are registered.

A job function is called as ``fn(ctx, params)`` — ``ctx`` is the :class:`rjobs.JobContext`,
``params`` the job's decoded JSON params, or an instance of the msgspec Struct the second parameter
is annotated with (validated before the call). Then:

- a return value is the result: the job moves to the machine's success state;
- returning :class:`Partial` moves it to the partial state (what was done, and what went wrong);
- raising :class:`Retry` asks for another attempt at a given time;
- raising :class:`Fail` (or any exception with ``retryable = False``) fails the job at once;
- any other exception is retried with the function's backoff policy while attempts remain.

:func:`job` attaches per-function settings (registered name, retry policy, timeout, params type).
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, overload

import msgspec

from rjobs.models import JobError
from rjobs.store.keys import validate_name
from rjobs.worker.retry import RetryPolicy

__all__ = [
    "Fail",
    "JobFunction",
    "Partial",
    "Retry",
    "check_importable",
    "describe_error",
    "error_code",
    "job",
    "registry",
    "retry_after",
    "retryable",
]

R = TypeVar("R")
#: What a Worker accepts as its functions.
Functions = Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]]


class Partial(msgspec.Struct, frozen=True):
    """Return this from a job function to end the job in the partial state: ``result`` is what was
    done, ``error`` (text, exception, dict or :class:`rjobs.JobError`) what was not."""

    result: Any
    error: Any


class Retry(Exception):
    """Raise to run the job again ``after`` seconds (None = the function's backoff policy). With
    ``group=True`` (a 429 from the service behind a limited group or type) no job of the job's group
    (else of its type) is claimed for ``after`` seconds either, in any worker (Queue.backoff).

    It counts as an attempt: once ``max_attempts`` is reached the job fails with code ``retry``.
    """

    code = "retry"

    def __init__(self, after: float | None = None, reason: str = "", *, group: bool = False) -> None:
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, (int, float)) or not 0 <= after < math.inf
        ):
            raise ValueError("Retry(after=...) must be a non-negative, finite number of seconds or None")
        if group and not after:
            raise ValueError("Retry(group=True) needs after= (how long the whole group waits)")
        super().__init__(reason or (f"retry requested in {after} s" if after is not None else "retry requested"))
        self.after = after
        self.reason = reason
        self.group = group  # push the job's group (else its type) back too: no job of it claimed meanwhile


class Fail(Exception):
    """Raise to fail the job at once, without retrying. The stored error's code is ``code`` when
    given, else the exception's class name (so ``class PaymentDeclined(Fail)`` reads well)."""

    retryable = False

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


def error_code(exc: BaseException) -> str:
    """An exception's machine-readable code: its ``code`` attribute when that is a non-empty
    string, else its class name."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


class JobFunction(Generic[R]):
    """A job function plus the settings the worker applies to it. Calling it calls the function.

    ``params`` is the type params are converted to with ``msgspec.convert`` before the call (any
    type msgspec understands); when not given, a msgspec Struct annotation on the function's second
    parameter is used. ``timeout`` (seconds) makes a run that takes longer a retryable failure with
    code ``timeout``. ``retry`` overrides the worker's backoff policy. ``isolate=True`` runs each
    attempt in a child process (:mod:`rjobs.worker.isolation`), so ``timeout`` is a hard limit: the
    process is killed. Such a function must be importable by reference (defined at the top level
    of a module other than ``__main__``), and its params, result and errors must pickle.
    """

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        params: Any = None,
        isolate: bool = False,
    ) -> None:
        if isinstance(fn, JobFunction):
            raise TypeError("already a JobFunction")
        if not callable(fn):
            raise TypeError(f"a job function must be callable, not {type(fn).__name__}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError("timeout must be a positive number of seconds or None")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be an rjobs.RetryPolicy")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not self.name:
            raise ValueError(f"{fn!r} has no __name__: register it under an explicit name")
        self.retry = retry
        self.timeout = float(timeout) if timeout is not None else None
        self.is_async = _is_async(fn)
        self.isolate = bool(isolate)
        if self.isolate:
            _check_reference(fn, self.name)
        self.params_type: Any = params if params is not None else _struct_annotation(fn)
        self._empty = _empty_for(fn) if self.params_type is None else None
        _check_signature(fn, self.name)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobFunction {self.name!r} of {self.fn!r}>"

    def with_name(self, name: str) -> JobFunction[R]:
        """The same function and settings under another registered name."""
        return JobFunction(
            self.fn, name=name, retry=self.retry, timeout=self.timeout, params=self.params_type, isolate=self.isolate
        )

    def convert_params(self, params: Any) -> Any:
        """Validate raw params against ``params_type`` (raises msgspec.ValidationError). A job
        enqueued without params (None) gets the type's empty value when it has one: ``{}`` for a
        mapping or a Struct whose fields all have defaults, ``[]`` for a sequence; None when the type
        allows it; else the same validation error (the job fails without retries)."""
        if self.params_type is None:
            if params is None and self._empty is not None:
                return type(self._empty)()  # a fresh {} or [] per job
            return params
        if params is None:
            try:
                return msgspec.convert(None, self.params_type)
            except msgspec.ValidationError:
                empties: tuple[Any, ...] = ({}, [])
                for empty in empties:
                    try:
                        return msgspec.convert(empty, self.params_type)
                    except msgspec.ValidationError:
                        continue
        return msgspec.convert(params, self.params_type)


@overload
def job(fn: Callable[..., R], /) -> JobFunction[R]: ...


@overload
def job(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    params: Any = None,
    isolate: bool = False,
) -> Callable[[Callable[..., R]], JobFunction[R]]: ...


def job(
    fn: Callable[..., R] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    params: Any = None,
    isolate: bool = False,
) -> JobFunction[R] | Callable[[Callable[..., R]], JobFunction[R]]:
    """Decorate a job function, bare (``@job``) or with settings (``@job(timeout=30)``,
    ``@job(timeout=60, isolate=True)`` for a hard limit in a child process)."""

    def wrap(f: Callable[..., R]) -> JobFunction[R]:
        return JobFunction(f, name=name, retry=retry, timeout=timeout, params=params, isolate=isolate)

    return wrap(fn) if fn is not None else wrap


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    return inspect.iscoroutinefunction(call)


def _params_parameter(fn: Callable[..., Any]) -> inspect.Parameter | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: nothing to learn
        return None
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional[1] if len(positional) >= 2 else None


def _params_annotation(fn: Callable[..., Any]) -> Any:
    param = _params_parameter(fn)
    if param is None:
        return None
    annotation: Any = param.annotation
    try:
        # Resolves string annotations (``from __future__ import annotations``).
        hints = typing.get_type_hints(fn)
        annotation = hints.get(param.name, annotation)
    except Exception:  # forward refs under TYPE_CHECKING: fall back to the raw annotation
        pass
    return annotation


def _struct_annotation(fn: Callable[..., Any]) -> Any:
    annotation = _params_annotation(fn)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    return None


def _empty_for(fn: Callable[..., Any]) -> dict[str, Any] | list[Any] | None:
    """What a job without params hands a function whose params are annotated as a mapping
    (``{}``) or a sequence (``[]``), instead of None; None for any other annotation."""
    annotation = _params_annotation(fn)
    origin = typing.get_origin(annotation) or annotation
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return {}
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence):
        return []
    return None


def _check_reference(fn: Callable[..., Any], name: str) -> None:
    """TypeError unless ``fn`` can be found again by module and qualified name in another process."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    how = "define it with `def` at the top level of an importable module (not in a function, not in __main__)"
    if not inspect.isfunction(fn) or not module or module in ("__main__", "__mp_main__") or "<" in qualname:
        where = f"{module}.{qualname}" if module else repr(fn)
        raise TypeError(f"job function {name!r} has isolate=True but {where} cannot be imported by reference: {how}")


def check_importable(jf: JobFunction[Any]) -> None:
    """TypeError unless an isolated function's module, imported, names this very function."""
    fn = jf.fn
    try:
        obj: Any = importlib.import_module(fn.__module__)
        for part in fn.__qualname__.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise TypeError(
            f"job function {jf.name!r} has isolate=True but {fn.__module__}.{fn.__qualname__} cannot be "
            f"imported ({type(exc).__name__}: {exc}): a child process finds it by that name"
        ) from None
    if obj is not fn and getattr(obj, "fn", None) is not fn:
        raise TypeError(
            f"job function {jf.name!r} has isolate=True but {fn.__module__}.{fn.__qualname__} names another "
            "object: a child process finds the function by that name"
        )


def _check_signature(fn: Callable[..., Any], name: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None, None)
    except TypeError:
        raise TypeError(f"job function {name!r} must accept (ctx, params), not {sig}") from None


def describe_error(exc: BaseException, *, code: str | None = None, traceback: str | None = None) -> JobError:
    """A structured error for an exception: its code, message and (optional) traceback."""
    after = retry_after(exc)
    return JobError(
        code=_sendable(code or error_code(exc)),
        message=_sendable((str(exc) or type(exc).__name__)[:2000]),
        retry_after_ms=int(after * 1000) if after is not None else None,
        traceback=_sendable(traceback) if traceback is not None else None,
    )


def _sendable(text: str) -> str:
    """Text as UTF-8 can carry it: an exception's message may hold lone surrogates (escaped here,
    or the job's failure could not be recorded)."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def retry_after(exc: BaseException) -> float | None:
    """Seconds the exception asks to wait before the next attempt (``Retry.after`` or a
    ``retry_after`` attribute), or None."""
    value = exc.after if isinstance(exc, Retry) else getattr(exc, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        return None
    return float(value)


def retryable(exc: BaseException) -> bool:
    """False for :class:`Fail` and any exception with a false ``retryable`` attribute."""
    return bool(getattr(exc, "retryable", True))


def registry(functions: Functions) -> dict[str, JobFunction[Any]]:
    """Job functions by registered name, from a mapping name -> callable or from callables (and
    :class:`JobFunction` objects) named after themselves; names are validated, duplicates refused."""
    items: Iterable[tuple[str | None, Callable[..., Any]]]
    if isinstance(functions, Mapping):
        items = functions.items()
    else:
        items = ((None, f) for f in functions)
    out: dict[str, JobFunction[Any]] = {}
    for name, fn in items:
        jf = fn if isinstance(fn, JobFunction) else JobFunction(fn, name=name)
        if name is not None and jf.name != name:
            jf = jf.with_name(name)
        validate_name("job type", jf.name)
        if jf.isolate:
            check_importable(jf)
        if jf.name in out:
            raise ValueError(f"two job functions are registered as {jf.name!r}")
        out[jf.name] = jf
    return out
