"""Which event ids a stream has sent: late lower ids get through once, duplicates never."""

from __future__ import annotations

from domain.event_delivery import DeliveredIds


def test_a_late_lower_id_is_delivered_once_and_duplicates_are_dropped():
    sent = DeliveredIds(span=100)
    assert [sent.first_delivery(i) for i in (5, 7, 9)] == [True, True, True]
    assert sent.first_delivery(6), "committed after 7 and 9: still new"
    assert not sent.first_delivery(6) and not sent.first_delivery(9) and not sent.first_delivery(5)
    assert sent.first_delivery(8) and sent.top == 9
    assert sent.first_delivery(10**12) and not sent.first_delivery(10**12), "a jump far ahead"
    assert sent.first_delivery(10**12 - 1)
    assert sent.first_delivery(9), "older than the window: sent again rather than lost"


def test_the_window_slides_with_the_highest_id():
    sent = DeliveredIds(span=8)
    for i in range(1, 20):
        assert sent.first_delivery(i)
    assert [sent.first_delivery(i) for i in range(12, 20)] == [False] * 8
    assert sent.first_delivery(11), "just past the window"
