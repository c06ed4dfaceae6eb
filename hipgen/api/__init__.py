"""Generated gRPC stubs of the hipgen.v1 API (protos/hipgen/v1/*.proto).

The modules live in ``hipgen/api/v1/`` and are build output of ``make protos``
(``python scripts/gen_protos.py``), not checked in and never hand-edited::

    from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, common_pb2
"""

from pathlib import Path

_V1 = Path(__file__).resolve().parent / "v1"
if not (_V1 / "common_pb2.py").is_file():
    raise ImportError(
        f"hipgen.api: the gRPC stubs have not been generated ({_V1} is missing or empty); "
        "run `make protos` (or `python scripts/gen_protos.py`)",
        name=__name__,
    )
