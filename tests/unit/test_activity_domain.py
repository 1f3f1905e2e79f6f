"""The activity log's and chat files' pure rules: filters as the clients send them, RFC 3339, the
SDK's inbound view, safe names, media types and workspace: URIs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.activity import (
    MAX_LIMIT,
    MAX_SINCE_SECS,
    ActivityFilter,
    CursorLost,
    InvalidFilter,
    inbound_view,
    parse_filter,
    parse_rfc3339,
)
from domain.chat_files import media_type, path_of, safe_name

NONE = dict.fromkeys(
    ("activity_type", "source", "since_secs", "since_id", "limit", "peer_id", "before_ts", "order")
)


def filt(**given: str | None) -> ActivityFilter:
    return parse_filter(**(NONE | given))


def test_defaults_read_the_latest_hundred_oldest_first() -> None:
    f = filt()
    assert (f.limit, f.oldest_first, f.since_id, f.activity_type) == (100, True, None, None)
    assert filt(order="desc").oldest_first is False


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("activity_type", "bogus", "type must be one of"),
        ("source", "user", "source must be"),
        ("since_secs", "0", "since_secs"),
        ("since_secs", "1.5", "since_secs"),
        ("since_id", "12abc", "since_id"),
        ("since_id", "-1", "since_id"),
        ("limit", "0", "limit"),
        ("limit", str(MAX_LIMIT + 1), "limit"),
        ("limit", "²", "limit"),  # a digit to str.isdigit(), not to int()
        ("since_secs", "9" * 5000, "since_secs"),  # past int()'s digit limit
        ("before_ts", "9999-12-31T23:59:59-23:59", "before_ts"),  # no UTC time for it
        ("peer_id", "1234", "peer_id must be a UUID"),
        ("before_ts", "2026-01-01", "before_ts"),
        ("before_ts", "2026-01-01T00:00:00", "before_ts"),  # no offset: ambiguous
        ("before_ts", "2026-01-01T00:00:00Z' OR '1'='1", "before_ts"),
        ("order", "random", "order"),
    ],
)
def test_a_bad_parameter_is_named(name: str, value: str, words: str) -> None:
    with pytest.raises(InvalidFilter, match=words):
        filt(**{name: value})


def test_values_are_normalised_and_capped() -> None:
    peer = uuid.uuid4()
    f = filt(peer_id=peer.hex, since_secs=str(10 * MAX_SINCE_SECS), since_id="42", limit="500")
    assert f.peer_id == str(peer) and f.since_secs == MAX_SINCE_SECS and f.since_id == 42 and f.limit == 500


def test_another_servers_cursor_is_lost_not_malformed() -> None:
    with pytest.raises(CursorLost):
        filt(since_id=str(uuid.uuid4()))


def test_rfc3339_offsets_and_fractions() -> None:
    assert parse_rfc3339("2026-05-01T00:00:00Z") == datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_rfc3339("2026-05-01T02:00:00+02:00") == datetime(2026, 5, 1, tzinfo=UTC)
    nanos = parse_rfc3339("2026-05-01T00:00:00.123456789-01:30")
    assert nanos == datetime(2026, 5, 1, 0, 0, 0, 123456, tzinfo=timezone(-timedelta(hours=1, minutes=30)))
    for bad in ("2026-13-01T00:00:00Z", "2026-05-01T25:00:00Z", "yesterday", ""):
        assert parse_rfc3339(bad) is None, bad


def test_the_sdk_reads_who_sent_what() -> None:
    message = {
        "params": {"message": {"parts": [{"kind": "text", "text": "hi"}, {"type": "text", "text": "there"}]}}
    }
    from_peer = {"activity_type": "a2a_receive", "source_id": "p", "request_body": message}
    assert inbound_view(from_peer) == {"source": "peer_agent", "source_id": "p", "text": "hi\nthere"}
    from_user = {**from_peer, "source_id": None}
    assert inbound_view(from_user) == {"source": "canvas_user", "source_id": None, "text": "hi\nthere"}
    own = {"activity_type": "a2a_receive", "method": "notify", "response_body": {"result": "done"}}
    assert inbound_view(own) == {"source": "agent", "text": "done"}
    assert inbound_view({"activity_type": "agent_log"}) is None
    assert inbound_view({"activity_type": "a2a_receive", "request_body": ["odd"]})["text"] == ""  # type: ignore[index]


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("my photo (1).png", "my_photo_1.png"),
        (".hidden", "hidden"),
        ("....", "file"),
        ("", "file"),
        (None, "file"),
        ("ünïcødé.txt", "ncd.txt"),
        ("a" * 300 + ".txt", ("a" * 300 + ".txt")[-100:]),
    ],
)
def test_names_cannot_leave_their_directory(given: str | None, safe: str) -> None:
    assert safe_name(given) == safe


def test_the_declared_type_wins_then_the_extension() -> None:
    assert media_type("text/x-custom; charset=utf-8", "a.png") == "text/x-custom"
    assert media_type("application/octet-stream", "a.png") == "image/png"
    assert media_type(None, "a.pdf") == "application/pdf"
    assert media_type("", "noext") == "application/octet-stream"
    assert media_type("garbage", "a.txt") == "text/plain"


def test_only_uploaded_chat_files_are_named_by_uris() -> None:
    good = f"/chat-uploads/{uuid.uuid4().hex}-notes.md"
    assert path_of(f"workspace:{good}") == good == path_of(good)
    for bad in (
        "workspace:/etc/passwd",
        f"workspace:/chat-uploads/{uuid.uuid4().hex}-../x",
        "workspace:/chat-uploads/short-x",
        "file:///chat-uploads/x",
        f"workspace:/chat-uploads/{uuid.uuid4().hex}-a/b",
    ):
        assert path_of(bad) is None, bad
