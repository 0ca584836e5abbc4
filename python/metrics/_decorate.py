"""Turn the core's context managers into decorators for sync and async functions.

The wrapper keeps the function's signature (`__signature__`), so `inspect.signature` and
`inspect.getfullargspec` (which frameworks use to inject arguments) see the function's own
parameters, not `*args, **kwargs`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


def decorate(func: Callable[..., Any], ctx: Any) -> Callable[..., Any]:
    """Return `func` wrapped so each call runs inside a fresh copy of the context `ctx`."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with ctx._fresh():
                return await func(*args, **kwargs)

        return _keep_signature(async_wrapper, func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with ctx._fresh():
            return func(*args, **kwargs)

    return _keep_signature(wrapper, func)


def _keep_signature(wrapper: Callable[..., Any], func: Callable[..., Any]) -> Callable[..., Any]:
    try:
        # inspect.signature() honours __signature__ on any function; typeshed's Callable lacks it.
        wrapper.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        pass  # A callable without a signature (some builtins): keep the wrapper's.
    return wrapper
