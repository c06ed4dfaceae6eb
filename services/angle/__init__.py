"""AngleService (DESIGN §3): Norberg angles of radiographs over gRPC, on any :class:`Backend`.

``services.server.angle_servicer`` builds it on the embedded ONNX Runtime backend; tests and other
deployments build :class:`AngleServicer` on their own backend.
"""

from services.angle.servicer import (
    BATCH_PIXELS,
    BATCH_SIZE,
    IMAGES_MEASURED,
    INFERENCE_SECONDS,
    AngleOptions,
    AngleRequestError,
    AngleServicer,
    DecodedImage,
    FieldViolation,
    decode_image,
    label_to_proto,
    parse_options,
)

__all__ = [
    "BATCH_PIXELS",
    "BATCH_SIZE",
    "IMAGES_MEASURED",
    "INFERENCE_SECONDS",
    "AngleOptions",
    "AngleRequestError",
    "AngleServicer",
    "DecodedImage",
    "FieldViolation",
    "decode_image",
    "label_to_proto",
    "parse_options",
]
