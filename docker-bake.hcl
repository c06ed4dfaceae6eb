// hipgen images: `docker buildx bake` builds all of them (group "default"), the serving base first,
// since each service target takes it as a named build context ("target:serving-base").
//
//   docker buildx bake                                   # every image, tagged hipgen/<name>:0.1.0
//   docker buildx bake angle --load                      # one service image (and the base it needs)
//   TAG=0.2.0 REGISTRY=registry.example.com/hipgen docker buildx bake --push
//   docker buildx bake --print                           # the resolved configuration, builds nothing
//
// Versions are build args: TAG becomes HIPGEN_VERSION (the image label), PYTHON_IMAGE the base of the
// serving base and of the training image (pin a digest here for reproducible builds).

variable "TAG" {
  default = "0.1.0"
}

variable "REGISTRY" {
  default = "hipgen"
}

variable "PYTHON_IMAGE" {
  default = "python:3.11-slim-bookworm"
}

// revision label (org.opencontainers.image.revision); CI sets it to the commit
variable "VCS_REF" {
  default = "unknown"
}

group "default" {
  targets = ["serving-base", "angle", "generate", "score", "gateway", "train"]
}

// shared by every target: the repository root is the context (see .dockerignore)
target "_common" {
  context = "."
  args = {
    HIPGEN_VERSION = TAG
    VCS_REF        = VCS_REF
  }
}

target "serving-base" {
  inherits   = ["_common"]
  dockerfile = "docker/serving-base.Dockerfile"
  args = {
    PYTHON_IMAGE = PYTHON_IMAGE
  }
  tags = ["${REGISTRY}/serving-base:${TAG}"]
}

// the service images: FROM ${BASE_IMAGE}, here the serving-base target of this same bake run rather
// than a pulled image (a named context; BASE_IMAGE's default in the Dockerfiles names the tag instead)
target "_service" {
  inherits = ["_common"]
  contexts = {
    "serving-base" = "target:serving-base"
  }
  args = {
    BASE_IMAGE = "serving-base"
  }
}

target "angle" {
  inherits   = ["_service"]
  dockerfile = "services/angle/Dockerfile"
  tags       = ["${REGISTRY}/angle:${TAG}"]
}

target "generate" {
  inherits   = ["_service"]
  dockerfile = "services/generate/Dockerfile"
  tags       = ["${REGISTRY}/generate:${TAG}"]
}

target "score" {
  inherits   = ["_service"]
  dockerfile = "services/score/Dockerfile"
  tags       = ["${REGISTRY}/score:${TAG}"]
}

// the gateway image also runs the dataset shard workers: it names itself as their image
target "gateway" {
  inherits   = ["_service"]
  dockerfile = "services/gateway/Dockerfile"
  args = {
    WORKER_IMAGE = "${REGISTRY}/gateway:${TAG}"
  }
  tags = ["${REGISTRY}/gateway:${TAG}"]
}

// training and export Jobs (torch); e.g. --set train.args.PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
target "train" {
  inherits   = ["_common"]
  dockerfile = "training/Dockerfile"
  args = {
    PYTHON_IMAGE = PYTHON_IMAGE
  }
  tags = ["${REGISTRY}/train:${TAG}"]
}
