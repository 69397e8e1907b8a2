"""``Batcher.predict``'s callers in the crowd run alone without the batcher's lock
(``keepwarm.batching.loose``): their runs are counted exactly (folded into the counters),
a request queued beside them is taken when one ends, and the pipeline counts folded runs
as it counts runs one by one."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepwarm.batching import Batcher
from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.loose import FOLD_EVERY, PREDICT_FOLD_EVERY
from keepwarm.batching.pipeline import Pipeline
from keepwarm.batching.stats import RUN_SECONDS_BOUNDS
from keepwarm.errors import UnavailableError
from support.batch_models import InlineExecutor, RowModel
from support.waiting import wait_until

Arrays = dict[str, np.ndarray]


def _x(value: float, rows: int = 1) -> Arrays:
    return {"x": np.full((rows, 3), value, np.float32)}


def test_a_caller_in_the_crowd_runs_while_another_holds_the_batchers_lock() -> None:
    """The lock held elsewhere (a scrape of the counters, a batch being taken): a caller
    in the crowd, with nothing queued, runs at once all the same (through ``run_now`` it
    waited for the lock twice)."""
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=InlineExecutor(), slots=1, crowd=4)
    results: list[object] = []
    with batcher._dispatch._lock:  # the lock a run would have taken
        caller = threading.Thread(target=lambda: results.append(batcher.predict(_x(2))))
        caller.start()
        caller.join(10)
        assert not caller.is_alive()
    assert len(results) == 1 and isinstance(results[0], dict)
    np.testing.assert_array_equal(results[0]["x_echo"], np.full((1, 3), 4, np.float32))
    assert batcher.stats().batch_sizes == {1: 1}


def test_runs_alone_from_many_threads_are_counted_exactly() -> None:
    """Several folds' worth of runs from 4 threads at once, some of 2 rows (their own
    bucket) and some of 3 (padded to 4: not the common case): every run counted once in
    the counters, histogram and rows, and timed into the latency table."""
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=InlineExecutor(), slots=1, crowd=8)
    per_thread = 3 * FOLD_EVERY
    failures: list[BaseException] = []

    def calls(rows: int) -> None:
        try:
            for i in range(per_thread):
                out = batcher.predict(_x(i, rows))
                assert out["x_echo"].shape == (rows, 3)
                assert float(out["x_echo"][0, 0]) == 2.0 * i
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=calls, args=(r,)) for r in (1, 1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and not any(t.is_alive() for t in threads)
    stats = batcher.stats()
    assert stats.batch_sizes == {1: 2 * per_thread, 2: per_thread, 4: per_thread}
    assert stats.requests == stats.batches == 4 * per_thread
    assert stats.rows == per_thread * (1 + 1 + 2 + 3)
    assert stats.padded_rows == per_thread * (1 + 1 + 2 + 4)
    assert sum(stats.run_counts) == 4 * per_thread
    assert stats.run_seconds_sum > 0
    assert sorted(batcher.latency.snapshot()) == [1, 2, 4]
    assert sorted(model.calls) == sorted([1] * 2 * per_thread + [2, 4] * per_thread)


def test_a_request_queued_beside_runs_alone_is_taken_when_one_ends() -> None:
    """Two callers run alone (the one slot counts them as busy), so a server's request
    queues; when a run ends, its batch goes to the executor, and answers right."""
    executor = InlineExecutor()
    gate = threading.Event()
    model = RowModel(gate)
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0, slots=1, crowd=2)
    results: list[object] = []
    callers = [
        threading.Thread(target=lambda v=v: results.append(batcher.predict(_x(v)))) for v in (1, 2)
    ]
    for caller in callers:
        caller.start()
    assert wait_until(lambda: len(batcher._loose.runs) == 2)
    pending = batcher.start(_x(5), follow=False)
    assert not pending.done() and batcher.queued == 1 and executor.jobs == []
    gate.set()
    for caller in callers:
        caller.join(10)
    assert len(results) == 2 and batcher.queued == 0
    assert executor.run_all() == 1
    np.testing.assert_array_equal(pending.result(10)["x_echo"], np.full((1, 3), 10, np.float32))


def test_runs_alone_are_in_the_latency_table_before_a_request_queues() -> None:
    """Runs alone are timed into the table at the fold, not one by one; a request that
    queues folds them first, so that the queue's choices (hold a partial batch, cut a
    batch short) read every run's figure."""
    executor = InlineExecutor()
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, slots=1, crowd=4)
    for _ in range(3):  # fewer than a fold's worth: none folded yet
        batcher.predict(_x(1, 2))
    assert batcher.latency.get(2) is None
    done = batcher.start(_x(1, 4), follow=False, tried=True)  # queued, then run here
    assert batcher.latency.get(2) is not None  # the three runs, folded as it queued
    assert done.result(10)["x_echo"].shape == (4, 3) and executor.jobs == []
    assert batcher.stats().batch_sizes == {2: 3, 4: 1}


def test_predicts_own_callers_fold_less_often_than_a_servers_threads() -> None:
    """``Batcher.predict``'s callers (a library's threads) leave their runs unfolded up to
    ``PREDICT_FOLD_EVERY`` (a fold cost them 2-7% of the MLP's calls at 4-8 threads); a
    server thread's run alone (``run_alone``, whose ``Batcher.idle`` reads the pipeline
    unfolded) folds at ``FOLD_EVERY``; a read of the counters folds every run either way."""
    assert FOLD_EVERY < PREDICT_FOLD_EVERY
    batcher = Batcher(RowModel().predict, name="m", executor=InlineExecutor(), slots=1, crowd=4)
    loose = batcher._loose
    for _ in range(FOLD_EVERY):
        batcher.predict(_x(1))
    assert len(loose._timed[1]) == FOLD_EVERY  # not folded at FOLD_EVERY
    for _ in range(PREDICT_FOLD_EVERY - FOLD_EVERY):
        batcher.predict(_x(1))
    assert not loose.unfolded  # folded at PREDICT_FOLD_EVERY
    for _ in range(FOLD_EVERY - 1):
        batcher.predict(_x(1))
    assert batcher.run_alone(_x(1)) is not None
    assert not loose.unfolded  # the server's thread made it FOLD_EVERY: folded
    batcher.predict(_x(1))
    stats = batcher.stats()
    assert stats.batch_sizes == {1: PREDICT_FOLD_EVERY + FOLD_EVERY + 1}
    assert stats.requests == sum(stats.run_counts) == PREDICT_FOLD_EVERY + FOLD_EVERY + 1


def test_a_run_alone_that_fails_raises_and_is_counted_as_failed() -> None:
    def broken(inputs: Arrays) -> Arrays:
        raise RuntimeError("broken call")

    batcher = Batcher(broken, name="m", executor=InlineExecutor(), slots=1, crowd=4)
    with pytest.raises(RuntimeError, match="broken call"):
        batcher.predict(_x(1))
    assert batcher.stats().failed == 1 and batcher.stats().batches == 0


def test_a_closed_batcher_refuses_callers_in_the_crowd() -> None:
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=InlineExecutor(), slots=1, crowd=4)
    batcher.close()
    with pytest.raises(UnavailableError, match="unloading"):
        batcher.predict(_x(1))
    assert model.calls == []


@given(
    runs=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=20),
    answered=st.integers(min_value=0, max_value=40),
    seen=st.integers(min_value=0, max_value=60),
)
def test_runs_folded_count_in_the_pipeline_as_runs_one_by_one(
    runs: list[int], answered: int, seen: int
) -> None:
    table = LatencyTable(32)

    def pipeline() -> Pipeline:
        made = Pipeline(table)
        made.seen = seen
        made.finished(answered)  # rows answered earlier, on their way back
        made.running_rows = 0
        return made

    one_by_one, folded = pipeline(), pipeline()
    for rows in runs:
        one_by_one.started(rows)
        one_by_one.finished(rows)
    folded.ran_alone(len(runs), runs[-1], runs[-2] if len(runs) > 1 else -1)
    assert vars(folded) == vars(one_by_one)
    assert folded.limit(5, 0) == one_by_one.limit(5, 0)


def test_requests_queued_beside_a_run_alone_when_the_batcher_closes_still_run() -> None:
    """Closing while a run alone holds the one slot and two requests are queued (a
    batch the latency table says to hold for a larger bucket): the run's end takes them
    as one batch at once, not held for a waker that closing stopped (they would never
    run)."""
    now = [0.0]
    executor = InlineExecutor()
    gate = threading.Event()
    model = RowModel(gate)
    batcher = Batcher(
        model.predict, name="m", executor=executor, max_batch_size=4, max_delay_ms=1000,
        slots=1, crowd=1, clock=lambda: now[0],
    )  # fmt: skip
    for bucket in (1, 2, 4):
        batcher.latency.seed(bucket, 1.0)  # a row costs least at 4: holding pays
    results: list[object] = []
    caller = threading.Thread(target=lambda: results.append(batcher.predict(_x(1))))
    caller.start()
    assert wait_until(lambda: len(batcher._loose.runs) == 1)
    first = batcher.start(_x(2), follow=False)
    now[0] = 0.01  # 100 requests a second: the next 2 rows are 0.02 s away
    second = batcher.start(_x(3), follow=False)
    assert batcher.queued == 2 and executor.jobs == []
    batcher.close()
    gate.set()
    caller.join(10)
    assert len(results) == 1 and batcher.queued == 0
    assert executor.run_all() == 1 and model.calls[-1] == 2
    assert float(first.result(10)["x_echo"][0, 0]) == 4.0
    assert float(second.result(10)["x_echo"][0, 0]) == 6.0


@given(
    runs=st.lists(
        st.tuples(st.sampled_from([1, 2, 4]), st.floats(min_value=0.0, max_value=0.01)),
        min_size=1,
        max_size=2 * FOLD_EVERY,
    )
)
def test_a_fold_counts_each_run_at_its_size_and_run_time(runs: list[tuple[int, float]]) -> None:
    """Runs alone as a fold takes them (their rows and seconds; one size or several, all
    within the histogram's first bound or not): each counted at its size and in the
    histogram's bucket for its time, as a batch counted alone would be."""
    batcher = Batcher(RowModel().predict, name="m", executor=InlineExecutor(), slots=1)
    for rows, seconds in runs:
        batcher._loose._timed[rows].append(seconds)
    stats = batcher.stats()
    expected = [0] * (len(RUN_SECONDS_BOUNDS) + 1)
    for _, seconds in runs:
        expected[bisect_left(RUN_SECONDS_BOUNDS, seconds)] += 1
    assert stats.run_counts == expected
    assert stats.batch_sizes == dict(Counter(rows for rows, _ in runs))
    assert stats.requests == stats.batches == len(runs)
    assert stats.rows == stats.padded_rows == sum(rows for rows, _ in runs)
    assert stats.run_seconds_sum == pytest.approx(sum(seconds for _, seconds in runs))
    assert sorted(batcher.latency.snapshot()) == sorted({rows for rows, _ in runs})


def test_a_scalar_input_run_alone_runs_as_it_came_unbatched() -> None:
    """A 0-d input has no rows (``len`` of it raises): it runs alone as it came, counted
    at size 0 (not a bucket), untimed."""
    seen: list[Arrays] = []

    def echo(inputs: Arrays) -> Arrays:
        seen.append(inputs)
        return {"y": inputs["x"] * 2}

    batcher = Batcher(echo, name="m", executor=InlineExecutor(), slots=1, crowd=4)
    out = batcher.predict({"x": np.array(3.0, np.float32)})
    assert float(out["y"]) == 6.0 and seen[0]["x"].shape == ()
    stats = batcher.stats()
    assert stats.batch_sizes == {0: 1} and stats.requests == 1
    assert sum(stats.run_counts) == 0


def test_a_run_alone_reads_the_rows_of_whichever_single_input_it_is_given() -> None:
    """The only input is found by the name seen last (no view of the dict made); a
    request under another name is read by its own (the rows counted are its own)."""
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=InlineExecutor(), slots=1, crowd=4)
    first = batcher.predict({"x": np.full((2, 3), 1.0, np.float32)})
    other = batcher.predict({"z": np.full((4, 3), 2.0, np.float32)})
    again = batcher.predict({"x": np.full((1, 3), 3.0, np.float32)})
    assert first["x_sum"].tolist() == [3.0, 3.0] and other["z_sum"].tolist() == [6.0] * 4
    assert again["x_sum"].tolist() == [9.0] and model.calls == [2, 4, 1]
    stats = batcher.stats()
    assert stats.batch_sizes == {1: 1, 2: 1, 4: 1} and stats.rows == 7
