from api.secret_cache import InboundSecretCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_write_through_and_misses_not_cached():
    clock = Clock()
    cache = InboundSecretCache(ttl=300, clock=clock)
    assert cache.get("w") is None
    cache.put("w", None)  # absence is not cached
    assert cache.get("w") is None
    cache.put("w", "s1")
    clock.now += 299
    assert cache.get("w") == "s1"
    clock.now += 1
    assert cache.get("w") is None, "expired after 5 minutes"
    cache.put("w", "s2")
    cache.forget("w")
    assert cache.get("w") is None
