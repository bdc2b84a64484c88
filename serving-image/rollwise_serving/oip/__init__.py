"""The Open Inference Protocol's gRPC messages and service, as protoc generates them from
``grpc_predict_v2.proto`` (``scripts/oip_codegen.py``; never edit the ``*_pb2*`` files by hand)."""
