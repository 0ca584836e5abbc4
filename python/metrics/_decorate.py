"""Turn the core's context managers into decorators for sync and async functions."""

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

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with ctx._fresh():
            return func(*args, **kwargs)

    return wrapper
