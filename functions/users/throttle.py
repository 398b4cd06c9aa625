"""Login throttling: failed attempts per account, attempts per client address, and a bounded
queue for the password hash, so a flood neither guesses passwords nor starves real users.

- An account (its e-mail) gets `SHOP_LOGIN_FAILURES_PER_ACCOUNT` failed logins per
  `LOGIN_WINDOW`; past that every login to it is 429 (Retry-After) until the window ends, without
  even checking the password (which would cost a hash).
- A client address gets `SHOP_LOGIN_ATTEMPTS_PER_ADDRESS` logins per `LOGIN_WINDOW`. The address is
  the last entry of X-Forwarded-For, which the Ingress (the nearest proxy) appends; a call without
  it comes from inside (through a Dapr sidecar, every caller is 127.0.0.1) and is not counted.
- At most `SHOP_PASSWORD_HASH_QUEUE` requests wait for a hash slot (common/auth.py); beyond that
  the request is 503 at once (Retry-After) instead of queueing behind a flood.

Counts live in this process: with N replicas an attacker gets up to N times the limits. They are
bounded in memory (`MAX_KEYS`), the oldest windows forgotten first.
"""

import time
from collections import OrderedDict
from datetime import timedelta

LOGIN_WINDOW = timedelta(minutes=15)
MAX_KEYS = 100_000


class Limited(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WindowCounter:
    """Counts per key in fixed windows of `window` seconds."""

    def __init__(self, window: float, max_keys: int = MAX_KEYS) -> None:
        self.window = window
        self.max_keys = max_keys
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def _current(self, key: str, at: float) -> tuple[float, int]:
        started, count = self._counts.get(key, (at, 0))
        if at - started >= self.window:
            started, count = at, 0
        return started, count

    def count(self, key: str, at: float | None = None) -> int:
        return self._current(key, time.monotonic() if at is None else at)[1]

    def add(self, key: str, at: float | None = None) -> int:
        at = time.monotonic() if at is None else at
        started, count = self._current(key, at)
        self._counts[key] = (started, count + 1)
        self._counts.move_to_end(key)
        while len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)
        return count + 1

    def retry_after(self, key: str, at: float | None = None) -> int:
        at = time.monotonic() if at is None else at
        started, _ = self._current(key, at)
        return max(1, int(started + self.window - at) + 1)

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)


failures_by_account = WindowCounter(LOGIN_WINDOW.total_seconds())
attempts_by_address = WindowCounter(LOGIN_WINDOW.total_seconds())


def client_address(forwarded_for: str | None) -> str | None:
    """The caller's address as the nearest proxy saw it, or None for a call from inside."""
    if not forwarded_for:
        return None
    last = forwarded_for.split(",")[-1].strip()
    return last or None


def check(account: str, address: str | None, *, max_failures: int, max_attempts: int) -> None:
    """Raise Limited if this login may not even be tried now; counts the attempt by address."""
    if failures_by_account.count(account) >= max_failures:
        raise Limited("Too many failed logins for this account; try again later",
                      failures_by_account.retry_after(account))
    if address is not None:
        if attempts_by_address.add(address) > max_attempts:
            raise Limited("Too many logins from this address; try again later", attempts_by_address.retry_after(address))


def failed(account: str) -> None:
    failures_by_account.add(account)


def succeeded(account: str) -> None:
    failures_by_account.forget(account)
