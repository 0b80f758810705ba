#!/bin/sh
# BASICS Table I as separate processes: 4 clouds with 4 local validators each,
# 12 inter validators spread over the clouds, plus a gateway, an orchestrator
# and 2 servers per cloud (44 node processes). Usage: examples/federation/table1.sh [DIR]
set -eu
dir=${1:-/tmp/federact-table1}
cargo build --release --quiet
./target/release/federact init --dir "$dir" --clouds 4 --servers-per-cloud 2 --local-validators 4 --inter-validators 12 --force
exec ./target/release/federact up "$dir"
