"""The gRPC transport: KServe v2's ``inference.GRPCInferenceService`` and TF Serving's
``PredictionService`` and ``ModelService`` on one port, over the ``InferenceService``."""
