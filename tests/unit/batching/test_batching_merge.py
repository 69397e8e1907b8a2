"""merge/split: the pure helpers, and the property that batching never changes a result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepwarm.batching import Batcher, BatchSplitError, PadAxes, bucket_for, buckets, merge, split
from keepwarm.batching.merge import rows_and_key, rows_of
from keepwarm.errors import InvalidConfigError
from support.batch_models import InlineExecutor, RowModel

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    object,
]


def _array(rng: np.random.Generator, dtype: object, shape: tuple[int, ...]) -> np.ndarray:
    if dtype is object:
        flat = [
            bytes(rng.integers(0, 256, rng.integers(0, 5)).astype(np.uint8))
            for _ in range(int(np.prod(shape)))
        ]
        return np.array(flat, dtype=object).reshape(shape)
    if dtype is np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)  # type: ignore[type-var]
    return rng.integers(max(info.min, -100), min(info.max, 100), shape, endpoint=True).astype(dtype)


def test_buckets_are_powers_of_two_up_to_the_maximum() -> None:
    assert buckets(1) == (1,)
    assert buckets(8) == (1, 2, 4, 8)
    assert buckets(12) == (1, 2, 4, 8, 12)
    assert [bucket_for(n, 12) for n in (1, 2, 3, 5, 8, 9, 12, 13)] == [1, 2, 4, 8, 8, 12, 12, 13]


def test_rows_of_agrees_with_rows_and_key() -> None:
    cases = [
        {"x": np.zeros(())},
        {"x": np.zeros((0, 3))},
        {"a": np.zeros((2, 3)), "b": np.zeros((3, 3))},
        {},
        {"a": np.zeros((4, 3)), "b": np.zeros((4,))},
    ]
    for inputs in cases:
        found = rows_and_key(inputs, PadAxes())
        assert rows_of(inputs) == (0 if found is None else found[0])


def test_rows_and_key_refuses_what_cannot_be_batched() -> None:
    assert rows_and_key({"x": np.zeros(())}, PadAxes()) is None  # a scalar
    assert rows_and_key({"x": np.zeros((0, 3))}, PadAxes()) is None  # no rows
    assert rows_and_key({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))}, PadAxes()) is None
    assert rows_and_key({}, PadAxes()) is None
    one = rows_and_key({"x": np.zeros((2, 3), np.float32)}, PadAxes())
    other_dtype = rows_and_key({"x": np.zeros((5, 3), np.float64)}, PadAxes())
    other_tail = rows_and_key({"x": np.zeros((5, 4), np.float32)}, PadAxes())
    same = rows_and_key({"x": np.ones((7, 3), np.float32)}, PadAxes())
    assert one is not None and same is not None and other_dtype and other_tail
    assert one[0] == 2 and one[1] == same[1] != other_dtype[1] != other_tail[1]
    # Keyed by the dtype: the byte order and a string's width count, the spelling not.
    swapped = rows_and_key({"x": np.zeros((2, 3), ">f4")}, PadAxes())
    spelled = rows_and_key({"x": np.zeros((2, 3), "<f4")}, PadAxes())
    narrow = rows_and_key({"x": np.zeros((2, 3), "S3")}, PadAxes())
    wide = rows_and_key({"x": np.zeros((2, 3), "S4")}, PadAxes())
    assert swapped and spelled and narrow and wide
    assert swapped[1] != one[1] == spelled[1] and narrow[1] != wide[1]
    # With axis 1 padded, a different size there shares the key.
    pad = PadAxes.of([1])
    k1 = rows_and_key({"x": np.zeros((2, 3), np.float32)}, pad)
    k2 = rows_and_key({"x": np.zeros((2, 9), np.float32)}, pad)
    assert k1 and k2 and k1[1] == k2[1]


def test_pad_axes_is_checked() -> None:
    for bad in ([0], ["1"], [True], {"x": 1}, {"": [1]}, {"x": [-1]}):
        with pytest.raises(InvalidConfigError, match="pad_axes"):
            PadAxes.of(bad)  # type: ignore[arg-type]
    assert PadAxes.of({"tokens": [2, 1, 1]}).for_input("tokens") == (1, 2)
    assert PadAxes.of([1]).for_input("anything") == (1,)
    assert not PadAxes.of(None)


def test_a_single_request_at_its_bucket_passes_through_untouched() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    merged = merge([{"x": x}], 2, PadAxes())
    assert merged.inputs["x"] is x
    outputs = {"y": x * 2}
    (result,) = split(outputs, merged, "m")
    assert result["y"] is outputs["y"]


def test_rows_are_padded_to_the_bucket_with_copies_of_the_last_row() -> None:
    a, b = np.array([[1, 2]], np.int32), np.array([[3, 4], [5, 6]], np.int32)
    merged = merge([{"x": a}, {"x": b}], 4, PadAxes())
    assert merged.padded_rows == 4
    np.testing.assert_array_equal(merged.inputs["x"], [[1, 2], [3, 4], [5, 6], [5, 6]])
    first, second = split({"y": merged.inputs["x"] * 10}, merged, "m")
    np.testing.assert_array_equal(first["y"], [[10, 20]])
    np.testing.assert_array_equal(second["y"], [[30, 40], [50, 60]])


@pytest.mark.parametrize(
    "outputs",
    [
        {"y": np.zeros((3, 2))},  # one row short
        {"y": np.zeros((5, 2))},  # one row too many
        {"y": np.float32(1.0)},  # a scalar
        {"ok": np.zeros((4, 1)), "y": np.zeros((1,))},  # one output right, one wrong
    ],
)
def test_a_model_answering_the_wrong_number_of_rows_fails_the_batch(outputs: dict) -> None:
    merged = merge([{"x": np.zeros((1, 2))}, {"x": np.zeros((3, 2))}], 4, PadAxes())
    with pytest.raises(BatchSplitError, match=r"model 'my-model' returned output 'y'.*4 rows"):
        split(outputs, merged, "my-model")


def test_padded_axes_are_padded_with_zeros_and_cropped_back() -> None:
    pad = PadAxes.of({"tokens": [1]})
    short = {"tokens": np.array([[1, 2]], np.int64)}
    long = {"tokens": np.array([[3, 4, 5, 6]], np.int64)}
    merged = merge([short, long], 2, pad)
    np.testing.assert_array_equal(merged.inputs["tokens"], [[1, 2, 0, 0], [3, 4, 5, 6]])
    outputs = {
        "per_token": merged.inputs["tokens"] * 2,  # carries the padded axis: cropped
        "pooled": merged.inputs["tokens"].sum(axis=1),  # no such axis: as it is
        "fixed": np.ones((2, 7)),  # axis 1 of another size: left alone
    }
    first, second = split(outputs, merged, "m")
    np.testing.assert_array_equal(first["per_token"], [[2, 4]])
    # With the signature's open axes: an output whose axis 1 is fixed is never cropped,
    # even when its size there happens to equal the padded size.
    fixed4 = {"per_token": outputs["per_token"], "features": np.ones((2, 4))}
    crop = {"per_token": (1,), "features": ()}
    a, b = split(fixed4, merged, "m", crop)
    assert a["per_token"].shape == (1, 2) and a["features"].shape == (1, 4)
    assert b["features"].shape == (1, 4)
    np.testing.assert_array_equal(second["per_token"], [[6, 8, 10, 12]])
    assert first["pooled"].tolist() == [3] and second["pooled"].tolist() == [18]
    assert first["fixed"].shape == (1, 7)


def test_text_inputs_are_padded_with_empty_strings() -> None:
    pad = PadAxes.of([1])
    a = {"s": np.array([[b"a"]], dtype=object)}
    b = {"s": np.array([[b"b", b"c"]], dtype=object)}
    merged = merge([a, b], 2, pad)
    assert merged.inputs["s"].tolist() == [[b"a", b""], [b"b", b"c"]]


# ------------------------------------------------------------------ properties


@st.composite
def _requests(draw: st.DrawFn) -> tuple[int, list[dict[str, np.ndarray]]]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    max_batch = draw(st.integers(1, 16))
    # A few request shapes (each: inputs with a dtype and non-batch axes); requests of
    # the same shape may share a batch, the others must not be mixed in.
    kinds = []
    for _ in range(draw(st.integers(1, 3))):
        n_inputs = draw(st.integers(1, 3))
        kinds.append(
            [
                (
                    f"in{i}",
                    draw(st.sampled_from(DTYPES)),
                    tuple(draw(st.lists(st.integers(1, 4), max_size=2))),
                )
                for i in range(n_inputs)
            ]
        )
    requests = []
    for _ in range(draw(st.integers(1, 24))):
        kind = draw(st.sampled_from(kinds))
        rows = draw(st.integers(1, max_batch + 2))  # past max_batch_size too
        requests.append({name: _array(rng, dtype, (rows, *tail)) for name, dtype, tail in kind})
    return max_batch, requests


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert got[name].tolist() == want[name].tolist(), name  # exact, NaN-free inputs


@settings(max_examples=150, deadline=None)
@given(_requests(), st.integers(1, 3), st.randoms(use_true_random=False))
def test_every_batched_result_equals_the_unbatched_result(
    case: tuple[int, list[dict[str, np.ndarray]]], slots: int, order: object
) -> None:
    max_batch, requests = case
    arrival = list(range(len(requests)))
    order.shuffle(arrival)  # type: ignore[attr-defined]
    model = RowModel()
    executor = InlineExecutor(slots)
    batcher = Batcher(
        model.predict, name="m", executor=executor, max_batch_size=max_batch, max_delay_ms=0
    )
    futures = {}
    for index in arrival:
        futures[index] = batcher.submit(requests[index])
        if index % 3 == 0:
            executor.run_all()  # some batches run between arrivals, others gather
    executor.run_all()
    reference = RowModel()
    for index, request in enumerate(requests):
        assert futures[index].done()
        _assert_same(futures[index].result(), reference.predict(dict(request)))
    assert sum(model.calls) >= sum(r["in0"].shape[0] for r in requests)
    assert all(
        size <= max(max_batch, max(r["in0"].shape[0] for r in requests)) for size in model.calls
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=10), st.integers(0, 2**32 - 1))
def test_padded_sequences_agree_with_their_unpadded_results_within_tolerance(
    lengths: list[int], seed: int
) -> None:
    """Sequences of different lengths share a batch once axis 1 is padded: a sum over the
    sequence (zeros add nothing, but the summation order changes) agrees within float32's
    tolerance, and the per-step output is cropped back to each request's own length."""
    rng = np.random.default_rng(seed)

    def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seq = inputs["seq"]
        return {"pooled": seq.sum(axis=1), "steps": np.cumsum(seq, axis=1)}

    executor = InlineExecutor()
    batcher = Batcher(
        model,
        name="m",
        executor=executor,
        max_delay_ms=0,
        pad_axes=PadAxes.of({"seq": [1]}),
        crop_axes={"steps": (1,), "pooled": ()},  # as a signature [N, L, 4] and [N, 4] says
    )
    requests = [{"seq": rng.standard_normal((1, n, 4)).astype(np.float32)} for n in lengths]
    futures = [batcher.submit(r) for r in requests]
    executor.run_all()
    assert batcher.stats().batches <= 2  # the first alone, then all the others together
    for request, future in zip(requests, futures, strict=True):
        got, want = future.result(), model(request)
        assert got["steps"].shape == want["steps"].shape
        np.testing.assert_allclose(got["pooled"], want["pooled"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["steps"], want["steps"], rtol=1e-5, atol=1e-5)


def test_an_axis_not_in_pad_axes_is_never_padded() -> None:
    executor = InlineExecutor()
    calls: list[tuple[int, ...]] = []

    def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(inputs["seq"].shape)
        return {"y": inputs["seq"]}

    batcher = Batcher(model, name="m", executor=executor, max_delay_ms=0)
    for n in (3, 5, 3, 3):  # the first runs at once, the others gather meanwhile
        batcher.submit({"seq": np.ones((1, n), np.float32)})
    executor.run_all()
    assert sorted(calls) == [(1, 3), (1, 5), (2, 3)]
