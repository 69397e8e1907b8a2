"""Generated gRPC stubs (``scripts/gen_protos.py``) of TF Serving's and KServe v2's APIs.

Their descriptors live in ``POOL``, keepwarm's own descriptor pool, never in protobuf's
default one: TensorFlow, tensorflow-serving-api and tritonclient register the same full
names there, and both can then be imported in the process that imports these.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _well_known in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_well_known.DESCRIPTOR.serialized_pb)
