import pytest

from domain.images import image_tag, is_moving

CASES = [
    # (reference, moving?)
    ("ubuntu", True),
    ("ubuntu:latest", True),
    ("ubuntu:22.04", False),
    ("library/ubuntu", True),
    ("docker.io/library/ubuntu:24.04", False),
    ("ghcr.io/acme/agent:staging", True),
    ("ghcr.io/acme/agent:main", True),
    ("ghcr.io/acme/agent:dev", True),
    ("ghcr.io/acme/agent:edge", True),
    ("ghcr.io/acme/agent:nightly", True),
    ("ghcr.io/acme/agent:rolling", True),
    ("ghcr.io/acme/agent:LATEST", True),
    ("ghcr.io/acme/agent:v1.4.2", False),
    ("ghcr.io/acme/agent:main-2026-11-01", False),
    ("ghcr.io/acme/agent:latest-arm64", False),
    ("localhost:5000/foo", True),
    ("localhost:5000/foo:latest", True),
    ("localhost:5000/foo:1.0", False),
    ("registry.example.com:443/team/agent", True),
    ("registry.example.com:443/team/agent:sha-abc123", False),
    ("ubuntu@sha256:" + "a" * 64, False),
    ("ubuntu:latest@sha256:" + "b" * 64, False),
    ("localhost:5000/foo@sha256:" + "c" * 64, False),
    ("molecule-agent:3f2a9c1b7e4d", False),
]


@pytest.mark.parametrize(("ref", "moving"), CASES)
def test_moving_tag_classifier(ref: str, moving: bool) -> None:
    assert is_moving(ref) is moving


def test_registry_port_is_not_a_tag() -> None:
    assert image_tag("localhost:5000/foo") is None
    assert image_tag("localhost:5000/foo:1.0") == "1.0"
    assert image_tag("ubuntu:latest@sha256:" + "b" * 64) == "latest"
