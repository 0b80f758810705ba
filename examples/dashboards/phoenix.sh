#!/usr/bin/env bash
# Installs Arize Phoenix (an OpenTelemetry tracing UI from PyPI) into a venv
# and starts it, for users without Docker.
#
#   examples/dashboards/phoenix.sh [GRPC_PORT] [UI_PORT]
#
# Defaults: OTLP gRPC on 4317, UI (and OTLP HTTP at /v1/traces) on 6006.
# Environment: PHOENIX_VENV (venv directory, default ~/.cache/federact/phoenix-venv),
#              PHOENIX_WORKING_DIR (trace storage, default ~/.phoenix).
# The install is large (~850 MB) and the first start takes ~20 s.
# Phoenix accepts traces only: run nodes with OTEL_METRICS_EXPORTER=none.
set -euo pipefail

grpc_port="${1:-4317}"
ui_port="${2:-6006}"
venv="${PHOENIX_VENV:-$HOME/.cache/federact/phoenix-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/phoenix" ]; then
    echo "installing arize-phoenix into $venv (large download, once)" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet arize-phoenix
fi

echo "Phoenix UI:        http://localhost:$ui_port" >&2
echo "OTLP gRPC:         http://localhost:$grpc_port   (OTEL_EXPORTER_OTLP_ENDPOINT)" >&2
echo "OTLP HTTP/protobuf: http://localhost:$ui_port    (with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)" >&2
export PHOENIX_PORT="$ui_port"
export PHOENIX_GRPC_PORT="$grpc_port"
export PHOENIX_HOST="${PHOENIX_HOST:-127.0.0.1}"
exec "$venv/bin/phoenix" serve
