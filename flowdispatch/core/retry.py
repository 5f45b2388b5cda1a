"""The retry policy, shared by every executor.

An op with ``retries=k`` gets up to ``k + 1`` attempts. After a failed
attempt it is tried again only if the exception matches ``retry_on``
(exception types, or a predicate on the exception), after ``retry_delay``
seconds, multiplied by ``backoff`` for each further attempt and capped at
``max_delay``.

Examples
--------
>>> from flowdispatch.core.op import OpSettings
>>> s = OpSettings(retries=3, retry_on=(OSError,), retry_delay=1.0, backoff=2.0, max_delay=3.0)
>>> [retry_delay(s, OSError(), attempt) for attempt in (1, 2, 3, 4)]
[1.0, 2.0, 3.0, None]
>>> retry_delay(s, ValueError(), 1) is None
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .op import OpSettings, _RetryOn

__all__ = ["matches", "retry_delay"]


def matches(retry_on: _RetryOn, error: BaseException) -> bool:
    """Whether ``error`` is one that ``retry_on`` allows to retry."""
    if isinstance(retry_on, (type, tuple)):
        return isinstance(error, retry_on)
    try:
        return bool(retry_on(error))
    except Exception as exc:  # a broken predicate must not hide the op's own error
        error.add_note(f"flowdispatch: retry_on predicate raised {exc!r}; not retried")
        return False


def retry_delay(settings: OpSettings | None, error: BaseException, attempt: int) -> float | None:
    """Seconds to wait before trying again after failed attempt number ``attempt``.

    ``None`` means: do not try again.
    """
    if settings is None or attempt > settings.retries or not matches(settings.retry_on, error):
        return None
    delay = settings.retry_delay * settings.backoff ** (attempt - 1)
    if settings.max_delay is not None:
        delay = min(delay, settings.max_delay)
    return delay
