"""``service_leases.Held``: the lease a request's work holds on its worker thread, given
back once when the work returns, unless a request queued for its batch took it over."""

from __future__ import annotations

from keepwarm.service_leases import Held


class Lease:
    """Stands for the repository's lease: counts its releases."""

    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


def test_closed_gives_the_lease_back_once() -> None:
    lease = Lease()
    held = Held(lease)
    held.close()
    held.close()
    assert lease.released == 1


def test_handed_on_the_lease_is_given_back_by_its_new_holder_only() -> None:
    lease = Lease()
    held = Held(lease)
    taken = held.pop_all()
    held.close()  # the work returned: the queued request holds the lease now
    assert lease.released == 0
    assert held.pop_all() is not taken  # nothing left to hand on: an empty stack
    held.pop_all().close()
    assert lease.released == 0
    taken.close()
    taken.close()
    assert lease.released == 1
