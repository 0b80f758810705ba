#!/bin/sh
# The demo's small shape as separate processes: 3 clouds, each with a gateway,
# an orchestrator, 2 servers and 4 local validators; 4 inter validators run
# the consortium (28 node processes). Usage: examples/federation/small.sh [DIR]
set -eu
dir=${1:-/tmp/federact-small}
cargo build --release --quiet
./target/release/federact init --dir "$dir" --clouds 3 --servers-per-cloud 2 --local-validators 4 --inter-validators 4 --force
exec ./target/release/federact up "$dir"
