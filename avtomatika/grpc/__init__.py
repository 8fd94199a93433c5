"""The gRPC transport (grpc.aio): the worker stream."""
