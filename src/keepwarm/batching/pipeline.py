"""Long batches: each takes about half of the requests in the system; a second runs
beside the first only once a whole half is queued.

Clients that send their next request once answered (a closed loop, as most are) come
back together when their batch ends. When a batch takes far longer than a request's trip
back into the queue (answer written, next request read and decoded: milliseconds; a
MobileNetV2 batch of 16 on 2 cores: 100-200 ms), taking every queued request leaves
nothing queued for the next batch: the cores idle while the whole group comes back, and
the first to return runs alone (MobileNetV2 at 32 clients: batches of 29 beside batches
of 1-2, 0.6-0.8x a loop of batches of 32). Taking about half instead leaves the other
half queued: it runs while the first half's clients come back.

The second half does not wait for the first to end: once a whole half is queued it runs
beside the running batch, on the batcher's other slot. One TensorFlow call leaves part
of the cores idle (MobileNetV2 in-process on 2 cores: two calls of 16 at once served
1.2x the images per second of one call of 16 or 32 at a time), and the two batches,
started half a batch apart, end apart: each half's clients come back while the other
half runs, so the cores never wait for a whole group (binary c32: 0.95x the in-process
batch-32 loop against 0.85x with one batch at a time). A part of a half is not started
beside a running batch (it would share the cores for fewer rows, and end with it), nor
does a request run alone beside one. Nor is a half while the queue is full (requests
past it refused): then the cores never wait anyway, and two batches sharing them only
double each accepted request's time in its batch (MobileNetV2 past capacity: accepted
p50 257 against 157 ms at the same throughput).

It holds only while half the rows in the system make a batch of at least
``MIN_HALF_ROWS`` rows, and a batch of that size (its bucket's figure in the latency
table) takes at least ``LONG_BATCH_SECONDS``: small models (an MLP batch takes well under
a millisecond) and a few clients batch as before. (Sizes are not chosen by comparing the
table's figures per row: on a shared machine they move 2-4x between buckets measured a
minute apart, which turned the choice on and off at random.)

"In the system" counts the rows queued, running, and those answered since the batch before
the last began (on their way back: under load a request's trip back can outlast a batch;
each arrival is taken as one of them coming back, so that none counts twice; older ones
are taken as gone, as clients that closed are). It is the highest such count seen
lately, lowered by one row per batch taken, so that it follows clients that leave.
"Long" takes the latency table's figures measured while serving, from ``MIN_HALF_ROWS``
rows up to the half: a seeded figure (a bucket's first call, at warmup: an upper bound)
never counts, nor one bucket alone slowed once.

Not thread-safe: the batcher calls every method under its lock.
"""

from __future__ import annotations

from keepwarm.batching.latency import LatencyTable

#: A batch at least this long dwarfs a request's trip back into the queue.
LONG_BATCH_SECONDS = 0.02
#: Halves smaller than this serve a row for clearly more (MobileNetV2, CPU per image:
#: batch 1 2.1x, 4 1.15x, 8 to 32 within 6% of each other), so they are not formed.
MIN_HALF_ROWS = 8


class Pipeline:
    """See the module docstring. ``started`` and ``finished`` bracket every batch run
    (rows: the requests' own); ``limit`` is asked before each batch is taken."""

    def __init__(self, latency: LatencyTable) -> None:
        self.latency = latency
        self.running_rows = 0
        self.seen = 0  # rows in the system lately (see the module docstring)
        self.on = False  # the last ``limit`` bounded batches to halves
        # Rows answered and not back yet: since the last batch began (``_answered``) and
        # in the batch before (``_earlier``); older ones are taken as gone.
        self._answered = 0
        self._earlier = 0

    def arrived(self, rows: int) -> None:
        """A request queued: taken as one of those answered coming back."""
        earlier = min(self._earlier, rows)
        self._earlier -= earlier
        self._answered = max(0, self._answered - (rows - earlier))

    def started(self, rows: int) -> None:
        self.running_rows += rows
        self.seen = max(0, self.seen - 1)
        self._earlier, self._answered = self._answered, 0

    def finished(self, rows: int) -> None:
        self.running_rows -= rows
        self._answered += rows

    def ran_alone(self, runs: int, last: int, previous: int) -> None:
        """``runs`` requests that ran alone, one after another, counted at once (the last
        two had ``last`` and ``previous`` rows; -1: none): as ``started`` then
        ``finished`` for each of them would count them."""
        self.seen = max(0, self.seen - runs)
        self._earlier = previous if previous >= 0 else self._answered
        self._answered = last

    def limit(self, queued_rows: int, others: int, *, full: bool = False) -> int | None:
        """The rows the next batch may take: None (no bound from here: short batches or
        few requests), 0 (none now: ``others`` batches run and fewer than a half is
        queued, or the queue is ``full``), else half of the rows in the system, down to a
        bucket (padding a batch up to its bucket would be work for nothing)."""
        out = self._answered + self._earlier
        self.seen = max(self.seen, queued_rows + self.running_rows + out)
        half = max(b for b in self.latency.buckets if b <= max(1, self.seen // 2))
        self.on = half >= MIN_HALF_ROWS and self._long(half)
        if not self.on:
            return None
        return 0 if others and (full or queued_rows < half) else half

    def _long(self, rows: int) -> bool:
        """Whether batches of ``MIN_HALF_ROWS`` up to ``rows`` take long: each measured
        one of those buckets (at least one), so that a batch slowed once (a preempted
        thread) at a size that seldom runs does not count."""
        figures = [
            self.latency.measured(bucket)
            for bucket in self.latency.buckets
            if MIN_HALF_ROWS <= bucket <= rows
        ]
        known = [seconds for seconds in figures if seconds is not None]
        return bool(known) and min(known) >= LONG_BATCH_SECONDS

    def alone(self, running: int) -> bool:
        """Whether a request may run alone, at once, beside ``running`` batches."""
        return not (self.on and running)
