"""The gRPC server's TF Serving services (the shared ``grpc_served``) through the
``tensorflow-serving-api`` stubs: Predict by version and label, typed values and output
filters, errors that keep the server serving, model metadata and status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from support.grpc_repo import LIMIT, ServerProcess, X, direct

# ------------------------------------------------------------------ TF Serving (its own stubs)


@pytest.fixture(scope="module")
def tf_serving(grpc_served: ServerProcess) -> Iterator[Any]:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(grpc_served.grpc_address) as channel:
        yield (
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
        )


def _predict_request(version: int | str | None, **spec: Any) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "mlp")
    if isinstance(version, int):
        request.model_spec.version.value = version
    elif isinstance(version, str):
        request.model_spec.version_label = version
    request.model_spec.signature_name = spec.pop("signature_name", "")
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))  # tensor_content
    return request


@pytest.mark.parametrize(("version", "answered"), [(1, 1), (2, 2), ("stable", 1), ("canary", 2),
                                                 (None, 2)])  # fmt: skip
def test_tf_predict_by_version_and_label(
    tf_serving: Any, grpc_served: ServerProcess, version: int | str | None, answered: int
) -> None:
    import tensorflow as tf

    predict, _ = tf_serving
    answer = predict.Predict(_predict_request(version), timeout=30)
    assert answer.model_spec.name == "mlp" and answer.model_spec.version.value == answered
    assert answer.model_spec.signature_name == "serving_default"
    expected = direct(grpc_served.root, "mlp", answered, {"x": X})["y"]
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), expected)


def test_tf_predict_typed_values_and_output_filter(
    tf_serving: Any, grpc_served: ServerProcess
) -> None:
    import tensorflow as tf

    predict, _ = tf_serving
    request = _predict_request(1, signature_name="serving_default")
    request.inputs["x"].ClearField("tensor_content")
    request.inputs["x"].float_val.extend(X.reshape(-1).tolist())
    request.output_filter.append("y")
    answer = predict.Predict(request, timeout=30)
    assert list(answer.outputs) == ["y"]
    expected = direct(grpc_served.root, "mlp", 1, {"x": X})["y"]
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), expected)


def test_tf_predict_errors_keep_serving(tf_serving: Any) -> None:
    import tensorflow as tf

    predict, _ = tf_serving

    def code(request: Any) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            predict.Predict(request, timeout=30)
        return caught.value.code()  # type: ignore[no-any-return]

    assert code(_predict_request(1, name="nope")) == grpc.StatusCode.NOT_FOUND
    assert code(_predict_request("beta")) == grpc.StatusCode.NOT_FOUND
    assert code(_predict_request(0)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(_predict_request(1, signature_name="other")) == grpc.StatusCode.NOT_FOUND
    filtered = _predict_request(1)
    filtered.output_filter.append("nope")
    assert code(filtered) == grpc.StatusCode.INVALID_ARGUMENT
    ints = _predict_request(1)
    ints.inputs["x"].CopyFrom(tf.make_tensor_proto(X.astype(np.int32)))
    assert code(ints) == grpc.StatusCode.INVALID_ARGUMENT
    expanding = _predict_request(1)  # one value that would fill a 1 GiB tensor
    expanding.inputs["x"].CopyFrom(tf.make_tensor_proto(1.0, shape=[1 << 26, 4]))
    assert code(expanding) == grpc.StatusCode.INVALID_ARGUMENT
    huge = _predict_request(1)
    huge.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((LIMIT // 16 + 1, 4), np.float32)))
    assert code(huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert predict.Predict(_predict_request(1), timeout=30).model_spec.version.value == 1


def test_tf_model_metadata_and_status(tf_serving: Any) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    predict, models = tf_serving
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mlp"
    request.model_spec.version.value = 1
    answer = predict.GetModelMetadata(request, timeout=30)
    assert answer.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    x = signature.inputs["x"]
    assert (x.name, x.dtype, [d.size for d in x.tensor_shape.dim]) == ("x", 1, [-1, 4])
    assert list(signature.outputs) == ["y"]
    assert signature.method_name == "tensorflow/serving/predict"
    del request.metadata_field[:]
    with pytest.raises(grpc.RpcError) as caught:
        predict.GetModelMetadata(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def status(version: int | str | None, name: str = "mlp") -> list[tuple[int, str]]:
        message = get_model_status_pb2.GetModelStatusRequest()
        message.model_spec.name = name
        if isinstance(version, int):
            message.model_spec.version.value = version
        elif isinstance(version, str):
            message.model_spec.version_label = version
        answer = models.GetModelStatus(message, timeout=30)
        state = get_model_status_pb2.ModelVersionStatus.State.Name
        return [(v.version, state(v.state)) for v in answer.model_version_status]

    assert status(None) == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert status(1) == [(1, "AVAILABLE")]
    assert status("canary") == [(2, "AVAILABLE")]
    with pytest.raises(grpc.RpcError) as caught:
        status(None, name="nope")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
