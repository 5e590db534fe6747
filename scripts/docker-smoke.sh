#!/usr/bin/env bash
# Build the image and check it serves: ready, classifies, exports metrics, runs as a
# non-root user and carries no torch. Prints the builder and serving image sizes.
#
#   scripts/docker-smoke.sh            (uses ../shared/tools/docker-local.sh where present)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8089}
source scripts/docker-local-env.sh
docker build "${BUILD_ARGS[@]}" --target builder -t slimserve-builder:latest .
docker build "${BUILD_ARGS[@]}" -t slimserve:latest .

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
