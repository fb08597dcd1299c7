"""Which acknowledgements to send for one channel's deliveries, so that most go as one.

An ack is a frame, a socket write and a turn of the event loop: about a tenth of the daemon's CPU per
job when every delivery is acked on its own. AMQP's ``multiple`` flag acks every delivery up to a tag
in one frame. It is safe only for a prefix of tags that this consumer has all settled, so the window
follows the lowest tag not yet settled: tags are given out 1, 2, 3... per channel (AMQP 0-9-1,
``basic.deliver``), and a delivery this code has not seen yet stops the prefix, so it is never acked
by accident. Acks above the prefix go one by one, at once: holding them would keep prefetch slots.
"""

from __future__ import annotations

__all__ = ["AckWindow"]


class AckWindow:
    """The settled deliveries of one channel, and the ack frames they call for.

    :meth:`ack` queues an ack; :meth:`settled` records a delivery settled otherwise (rejected or
    requeued, its frame already sent); :meth:`take` returns the frames to send now, as ``(tag,
    multiple)``, in the order to send them.
    """

    def __init__(self) -> None:
        #: The lowest tag not yet settled: every tag below it is settled (and acked, or sent otherwise).
        self._next = 1
        #: Settled tags at or above ``_next``, whose frames were sent or are queued in ``_acks``.
        self._settled: set[int] = set()
        self._acks: list[int] = []

    @property
    def pending(self) -> bool:
        return bool(self._acks)

    def ack(self, tag: int) -> None:
        self._settled.add(tag)
        self._acks.append(tag)

    def settled(self, tag: int) -> None:
        """A delivery settled by a frame of its own (reject, nack), already sent."""
        self._settled.add(tag)
        self._advance()

    def take(self) -> list[tuple[int, bool]]:
        """The frames for the acks queued since the last call: one ``multiple`` ack for those in the
        settled prefix, one each for the rest."""
        if not self._acks:
            return []
        acks, self._acks = self._acks, []
        self._advance()
        prefix = [tag for tag in acks if tag < self._next]
        frames: list[tuple[int, bool]] = []
        if prefix:
            frames.append((max(prefix), len(prefix) > 1))
        frames.extend((tag, False) for tag in sorted(acks) if tag >= self._next)
        return frames

    def _advance(self) -> None:
        while self._next in self._settled:
            self._settled.discard(self._next)
            self._next += 1
