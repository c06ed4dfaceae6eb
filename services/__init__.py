"""hipgen's gRPC services (DESIGN §2, §4): thin servers that translate protos to hipgen calls.

``services.server`` builds one server carrying any of AngleService, GenerateService, ScoreService and
DatasetService, plus ``grpc.health.v1`` and server reflection. Services never import torch or
``training/``.
"""
