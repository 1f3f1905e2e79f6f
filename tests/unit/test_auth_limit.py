"""The failed-authentication limiter on a fake clock."""

from __future__ import annotations

from api.auth_limit import AuthFailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_locks_out_the_address_until_its_window_closes():
    clock = Clock()
    limiter = AuthFailureLimiter(3, window=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None  # another address is unaffected
    clock.now += 59.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now += 0.5
    assert limiter.retry_after("10.0.0.1") is None


def test_failures_in_an_expired_window_do_not_count():
    clock = Clock()
    limiter = AuthFailureLimiter(3, window=60, clock=clock)
    limiter.failed("a")
    limiter.failed("a")
    clock.now += 60
    limiter.failed("a")  # opens a new window with one failure
    limiter.failed("a")
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") == 60


def test_zero_disables_the_limit():
    limiter = AuthFailureLimiter(0, clock=Clock())
    for _ in range(1000):
        limiter.failed("a")
    assert limiter.retry_after("a") is None


def test_memory_stays_bounded_by_expiry_and_by_the_cap():
    clock = Clock()
    limiter = AuthFailureLimiter(3, window=60, clock=clock, max_tracked=100)
    for i in range(50):
        limiter.failed(f"old-{i}")
    clock.now += 61
    limiter.failed("new")
    assert len(limiter._windows) == 1  # the expired windows went as a new one opened
    for i in range(1000):
        limiter.failed(f"spray-{i}")
    assert len(limiter._windows) <= 100


def test_a_credential_that_authenticated_from_the_address_is_never_locked_out():
    limiter = AuthFailureLimiter(2, window=60, clock=Clock())
    limiter.succeeded("10.0.0.1", "known")
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1", "known") is None
    assert limiter.retry_after("10.0.0.1", "guess") == 60
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2", "known") is None  # never limited there anyway
