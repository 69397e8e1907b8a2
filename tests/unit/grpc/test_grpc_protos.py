"""keepwarm's own .proto schemas against the clients' generated ones: every field keepwarm
declares has the clients' number, type and cardinality, so the bytes mean the same."""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

from keepwarm.grpc.protos.inference import grpc_service_pb2
from keepwarm.grpc.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
)

TF_SERVING_FILES = (
    predict_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    prediction_service_pb2,
    model_service_pb2,
)


def _messages(file: FileDescriptor) -> list[Descriptor]:
    def walk(message: Descriptor) -> list[Descriptor]:
        return [message, *(m for nested in message.nested_types for m in walk(nested))]

    return [m for top in file.message_types_by_name.values() for m in walk(top)]


def _closure(file: FileDescriptor) -> list[FileDescriptor]:
    seen: dict[str, FileDescriptor] = {}

    def visit(f: FileDescriptor) -> None:
        if f.name not in seen and not f.name.startswith("google/"):
            seen[f.name] = f
            for dep in f.dependencies:
                visit(dep)

    visit(file)
    return list(seen.values())


def _field_kind(field: Any) -> tuple[Any, ...]:
    target = field.message_type or field.enum_type
    return (field.number, field.type, field.is_repeated, target.full_name if target else None)


def _compare(ours: FileDescriptor, theirs: descriptor_pool.DescriptorPool) -> int:
    checked = 0
    for file in _closure(ours):
        for message in _messages(file):
            other = theirs.FindMessageTypeByName(message.full_name)
            for field in message.fields:
                assert field.name in other.fields_by_name, (message.full_name, field.name)
                assert _field_kind(field) == _field_kind(other.fields_by_name[field.name]), (
                    message.full_name,
                    field.name,
                )
                checked += 1
        for enum in file.enum_types_by_name.values():
            _compare_enum(enum, theirs.FindEnumTypeByName(enum.full_name))
        for service in file.services_by_name.values():
            other_service = theirs.FindServiceByName(service.full_name)
            for method in service.methods:
                other_method = other_service.methods_by_name[method.name]
                assert method.input_type.full_name == other_method.input_type.full_name
                assert method.output_type.full_name == other_method.output_type.full_name
    return checked


def _compare_enum(ours: EnumDescriptor, theirs: EnumDescriptor) -> None:
    for value in ours.values:
        assert theirs.values_by_name[value.name].number == value.number, value.name


def test_kserve_schema_matches_tritonclient() -> None:
    service_pb2 = importlib.import_module("tritonclient.grpc.service_pb2")
    theirs = service_pb2.DESCRIPTOR.pool
    assert _compare(grpc_service_pb2.DESCRIPTOR, theirs) > 100


def test_tf_serving_schema_matches_tensorflow_serving_api() -> None:
    importlib.import_module("tensorflow_serving")  # a dev extra: missing fails
    modules = [
        importlib.import_module(f"tensorflow_serving.apis.{m.__name__.rsplit('.', 1)[1]}")
        for m in TF_SERVING_FILES
    ]
    theirs = modules[0].DESCRIPTOR.pool
    assert sum(_compare(m.DESCRIPTOR, theirs) for m in TF_SERVING_FILES) > 40


def test_imports_next_to_tritonclient_and_no_tensorflow() -> None:
    """In one fresh process: keepwarm's stubs import no TensorFlow and register nothing in
    protobuf's default pool; tritonclient's, imported after them, work beside them."""
    code = (
        "import sys\n"
        "from keepwarm.grpc.protos.inference import grpc_service_pb2 as ours\n"
        "from keepwarm.grpc.protos.tensorflow_serving.apis import predict_pb2\n"
        "assert 'tensorflow' not in sys.modules, 'the stubs imported TensorFlow'\n"
        "from google.protobuf import descriptor_pool\n"
        "from keepwarm.grpc.protos import POOL\n"
        "for name in ('inference.ModelInferRequest', 'tensorflow.serving.PredictRequest'):\n"
        "    assert POOL.FindMessageTypeByName(name).full_name == name\n"
        "    try:\n"
        "        descriptor_pool.Default().FindMessageTypeByName(name)\n"
        "    except KeyError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError(name + ' is in the default pool')\n"
        "import tritonclient.grpc.service_pb2 as theirs\n"
        "data = ours.ModelInferRequest(model_name='m').SerializeToString()\n"
        "assert theirs.ModelInferRequest.FromString(data).model_name == 'm'\n"
        "print('ok')\n"
    )
    importlib.import_module("tritonclient.grpc")  # a dev extra: missing fails
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
