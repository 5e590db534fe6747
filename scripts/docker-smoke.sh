#!/usr/bin/env bash
# Build the image and check it serves: ready, classifies, exports metrics, runs as a
# non-root user and carries no torch. Prints the builder and serving image sizes.
#
#   scripts/docker-smoke.sh            (uses ../shared/tools/docker-local.sh where present)
#
# Where download.pytorch.org is out of reach, the torch CPU wheel is taken from
# /opt/wheels (copied into docker/wheels/) and the build uses PyPI for the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8089}
LOCAL=../shared/tools/docker-local.sh
[ -x "$LOCAL" ] && "$LOCAL"
# A base imported from a private build directory keeps that directory's mode 0700 on "/",
# which locks every non-root user out; export and import it again to get 0755.
if ! docker run --rm --user 65534 python:3.11-slim /usr/bin/true 2>/dev/null; then
  fix=$(docker create python:3.11-slim /usr/bin/true)
  docker export "$fix" | docker import -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - python:3.11-slim >/dev/null
  docker rm "$fix" >/dev/null
fi
args=(--network=host)
if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  cp -n /opt/wheels/torch-2.13.0+cpu-*.whl docker/wheels/
  args+=(--build-arg TORCH_INDEX=https://pypi.org/simple)
fi
docker build "${args[@]}" --target builder -t slimserve-builder:latest .
docker build "${args[@]}" -t slimserve:latest .

name=slimserve-smoke-$$
docker run -d --rm --name "$name" --network=host -e SLIMSERVE_PORT="$PORT" slimserve:latest >/dev/null
trap 'docker stop "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 120); do
  curl -fs "localhost:$PORT/health/ready" >/dev/null && break
  sleep 1
done
curl -fs "localhost:$PORT/health/ready" >/dev/null || { docker logs "$name"; echo "smoke: not ready in 120 s" >&2; exit 1; }
answer=$(curl -fs "localhost:$PORT/v1/models/original/classify" -H 'content-type: application/json' \
  -d '{"inputs": ["a charming and often affecting journey"]}')
echo "$answer" | grep -q '"label"' || { echo "smoke: bad answer: $answer" >&2; exit 1; }
curl -fs "localhost:$PORT/metrics" | grep -q 'slimserve_requests_total{model="original",status="200"}' \
  || { echo "smoke: request not in /metrics" >&2; exit 1; }
[ "$(docker exec "$name" id -u)" != 0 ] || { echo "smoke: runs as root" >&2; exit 1; }
if docker exec "$name" python -c "import torch" 2>/dev/null; then echo "smoke: torch in the serving image" >&2; exit 1; fi
if docker exec "$name" python -c "import transformers" 2>/dev/null; then echo "smoke: transformers in the serving image" >&2; exit 1; fi
health=$(docker inspect --format '{{.State.Health.Status}}' "$name")
echo "smoke: ok (healthcheck: $health); $answer"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^slimserve(-builder)?:latest '
