# Sourced by docker-smoke.sh and compose-local.sh: make this machine's Docker usable and
# say how to build the image here. Sets BUILD_ARGS (for docker build) and exports
# TORCH_INDEX (read by docker-compose.yml).
LOCAL=../shared/tools/docker-local.sh
[ -x "$LOCAL" ] && "$LOCAL"
# A base imported from a private build directory keeps that directory's mode 0700 on "/",
# which locks every non-root user out; export and import it again to get 0755.
if ! docker run --rm --user 65534 python:3.11-slim /usr/bin/true 2>/dev/null; then
  fix=$(docker create python:3.11-slim /usr/bin/true)
  docker export "$fix" | docker import -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - python:3.11-slim >/dev/null
  docker rm "$fix" >/dev/null
fi
BUILD_ARGS=(--network=host)
export TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
# Where download.pytorch.org is out of reach, the torch CPU wheel on disk goes in through
# docker/wheels/ and PyPI serves the rest.
if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  cp -n /opt/wheels/torch-2.13.0+cpu-*.whl docker/wheels/
  TORCH_INDEX=https://pypi.org/simple
fi
BUILD_ARGS+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
