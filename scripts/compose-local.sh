#!/usr/bin/env bash
# Run the compose stack on a machine without an image registry or bridge networks and
# check it end to end: slimserve healthy, Prometheus healthy and scraping it, the load
# profile's traffic reaching every variant. Exit 0 only when all of that held.
#
#   scripts/compose-local.sh           (uses ../shared/tools/docker-local.sh where present)
#
# Two stand-ins, both said out loud:
# - prom/prometheus is built locally from Debian's prometheus package when the real image
#   cannot be pulled;
# - bridge networks are off under docker-local.sh, so the resolved stack is rewritten onto
#   the host network with the service names mapped to 127.0.0.1.
# Grafana has no Debian package and no image here, so it is left out of this run; its
# provisioning and every dashboard query are checked by tests/test_deploy.py and
# tests/test_prometheus.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/docker-local-env.sh
COMPOSE=(docker compose)
docker compose version >/dev/null 2>&1 || COMPOSE=(docker-compose)

prom_image=$(python3 -c "import yaml; print(yaml.safe_load(open('docker-compose.yml'))['services']['prometheus']['image'])")
if ! docker image inspect "$prom_image" >/dev/null 2>&1 && ! docker pull -q "$prom_image" >/dev/null 2>&1; then
  echo "compose-local: $prom_image unavailable; building a stand-in from Debian's prometheus"
  docker build -q --network=host -t "$prom_image" - >/dev/null <<'EOF'
FROM python:3.11-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wget >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus"]
EOF
fi

# The stack as `docker compose` resolves it, moved onto the host network: published ports
# go (the host network publishes everything) and the service names point at 127.0.0.1.
override=$(mktemp --suffix=.yml)
"${COMPOSE[@]}" --profile load config | python3 -c "
import sys, yaml
stack = yaml.safe_load(sys.stdin)
for service in stack['services'].values():
    service.pop('ports', None)
    service.pop('networks', None)
    service['network_mode'] = 'host'
    service['extra_hosts'] = [f'{name}:127.0.0.1' for name in stack['services']]
    if 'build' in service:
        service['build']['network'] = 'host'
stack.pop('networks', None)
yaml.safe_dump(stack, sys.stdout)
" >"$override"
project=slimserve-local
run() { "${COMPOSE[@]}" -p "$project" -f "$override" --profile load "$@"; }
trap 'run down -v --remove-orphans >/dev/null 2>&1 || true; rm -f "$override"' EXIT

run config -q
run up -d --build slimserve prometheus load
healthy() { [ "$(docker inspect --format '{{.State.Health.Status}}' "$(run ps -q "$1")")" = healthy ]; }
for _ in $(seq 180); do healthy slimserve && healthy prometheus && break; sleep 1; done
healthy slimserve || { run logs slimserve; echo "compose-local: slimserve not healthy" >&2; exit 1; }
healthy prometheus || { run logs prometheus; echo "compose-local: prometheus not healthy" >&2; exit 1; }

query() { curl -fsG localhost:9090/api/v1/query --data-urlencode "query=$1"; }
variants=$(curl -fs localhost:8000/v1/models | python3 -c "import json,sys; print(' '.join(m['name'] for m in json.load(sys.stdin)['models'] if m['state']=='ready'))")
for _ in $(seq 120); do
  seen=$(query 'sum by (model) (slimserve_requests_total{status="200"})' \
    | python3 -c "import json,sys; print(' '.join(sorted(r['metric']['model'] for r in json.load(sys.stdin)['data']['result'])))" \
    2>/dev/null) || seen=""  # Prometheus may not answer yet: try again
  missing=$(for v in $variants; do [[ " $seen " == *" $v "* ]] || echo "$v"; done)
  [ -z "$missing" ] && break
  sleep 1
done
[ -z "$missing" ] || { run logs load | tail -20; echo "compose-local: no traffic seen by Prometheus for: $missing" >&2; exit 1; }
up=$(query 'up{job="slimserve"}' | python3 -c "import json,sys; print(next((r['value'][1] for r in json.load(sys.stdin)['data']['result']), 0))")
[ "$up" = 1 ] || { echo "compose-local: Prometheus target down" >&2; exit 1; }
echo "compose-local: ok; slimserve and prometheus healthy, target up, load traffic seen for: $seen"
run ps
