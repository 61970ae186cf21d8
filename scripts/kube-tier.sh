#!/usr/bin/env bash
# The kube tier from nothing, as a user runs it (the last step of `make test`): `make cluster`
# (here in the background, its etcd wiped first), `make image`, `make deploy`, `make test-kube`;
# then the cluster is stopped as Ctrl-C stops it and the host is checked for anything left
# (mounts, iptables chains, the bridge, cgroups), whatever failed before. Exit status: the first failure, else 0.
# Environment: KUBE_TIER_LOGS (.run/kube-tier), CLUSTER_START_TIMEOUT (600 s).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOGS=${KUBE_TIER_LOGS:-$ROOT/.run/kube-tier}
mkdir -p "$LOGS"
log() { printf '[kube-tier] %s %s\n' "$(date +%T)" "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "the kube tier runs a real node (mount and network namespaces, iptables, cgroups): it needs root"
  exit 1
fi
log "the node's packages and tools (cached: seconds; cold: half an hour or more, see $LOGS/tools.log)"
make -s bootstrap-node tools >"$LOGS/tools.log" 2>&1 || { log "bootstrap/tools failed (see $LOGS/tools.log)"; exit 1; }
.venv/bin/python -m devstack.cluster --reset >"$LOGS/cluster.log" 2>&1 &
cluster=$!

stop_cluster() {
  if kill -0 "$cluster" 2>/dev/null; then
    kill -TERM "$cluster"
    wait "$cluster"
  fi
  left=""
  mount | grep -q "$ROOT/.run/cluster" && left+=" mounts"
  iptables-save 2>/dev/null | grep -q '^:KUBE-' && left+=" KUBE-chains"
  ip link show unilingo0 >/dev/null 2>&1 && left+=" bridge"
  ls -d /sys/fs/cgroup/*/unilingo >/dev/null 2>&1 && left+=" cgroups"
  if [[ -n $left ]]; then log "LEFT BEHIND:$left"; return 1; fi
  log "cluster stopped, nothing left on the host"
}

rc=0
start=$SECONDS
for _ in $(seq "${CLUSTER_START_TIMEOUT:-600}"); do
  grep -q '^export KUBECONFIG' "$LOGS/cluster.log" && break
  kill -0 "$cluster" 2>/dev/null || break
  sleep 1
done
if grep -q '^export KUBECONFIG' "$LOGS/cluster.log"; then
  log "cluster up in $((SECONDS - start))s"
  for step in image deploy test-kube; do
    t=$SECONDS
    if make -s "$step" >"$LOGS/$step.log" 2>&1; then
      log "make $step: ok in $((SECONDS - t))s"
      [[ $step != test-kube ]] || log "kube tier: $(grep -E '[0-9]+ (passed|failed)' "$LOGS/$step.log" | tail -n 1)"
    else
      rc=1
      log "make $step FAILED after $((SECONDS - t))s (see $LOGS/$step.log)"
      tail -n 20 "$LOGS/$step.log" >&2
      break
    fi
  done
else
  rc=1
  log "the cluster did not start (see $LOGS/cluster.log)"
  tail -n 20 "$LOGS/cluster.log" >&2
fi
stop_cluster || rc=1
log "done in $((SECONDS - start))s, exit $rc"
exit $rc
