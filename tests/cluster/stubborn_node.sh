#!/usr/bin/env bash
# Stands in for lua5.4 in cluster_kills_a_node_that_ignores_sigterm: prints
# its pid, ignores SIGTERM and sleeps (bounded, so it cannot outlive a run).
trap '' TERM
echo "stubborn pid $$ up"
for _ in $(seq 600); do sleep 0.1; done
