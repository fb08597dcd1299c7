"""The ack window: a multiple ack covers only a prefix of deliveries this consumer has all settled."""

from __future__ import annotations

from daemon.bus.acks import AckWindow


def test_acks_settled_in_order_go_as_one_multiple_ack() -> None:
    window = AckWindow()
    for tag in (1, 2, 3, 4):
        window.ack(tag)
    assert window.take() == [(4, True)]
    assert window.take() == []


def test_a_delivery_not_yet_settled_stops_the_prefix() -> None:
    window = AckWindow()
    for tag in (1, 2, 4, 5):  # 3 is still being handled (or not yet seen)
        window.ack(tag)
    assert window.take() == [(2, True), (4, False), (5, False)]
    window.ack(3)
    window.ack(6)
    assert window.take() == [(6, True)], "up to 6: 3 and 6; 4 and 5 were acked already"


def test_a_rejected_delivery_is_part_of_the_prefix_without_an_ack() -> None:
    window = AckWindow()
    window.ack(1)
    window.settled(2)  # its reject frame was sent
    window.ack(3)
    assert window.take() == [(3, True)], "1 and 3; 2 is no longer outstanding"
    window.settled(4)
    window.ack(5)
    window.ack(7)
    assert window.take() == [(5, False), (7, False)]


def test_the_first_tag_missing_means_no_multiple_ack_at_all() -> None:
    window = AckWindow()
    for tag in (2, 3):
        window.ack(tag)
    assert window.take() == [(2, False), (3, False)]
    window.ack(1)
    window.ack(4)
    assert window.take() == [(4, True)]
