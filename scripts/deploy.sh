#!/usr/bin/env bash
# `make deploy`: install the platform on the node of `make cluster` (run it first, in another
# terminal) with the images of `make image`.
#
#   1. check the cluster: the node Ready, KEDA's CRDs and external metrics API served (KEDA
#      runs out of cluster, started by `make cluster`: see devstack/keda.py for why)
#   2. make sure the node has the images (imports .run/images/*.tar when it lacks them)
#   3. create the namespace and the credentials Secret (generated JWT and webhook secrets)
#   4. `helm upgrade --install` charts/unilingo with charts/unilingo/ci/node-values.yaml
#   5. wait until every pod of the release is Ready; print how to reach the API
#
# Environment: NAMESPACE (unilingo), RELEASE (unilingo), EXTRA_VALUES (a values file layered
# on top), KUBECONFIG (default .run/kubeconfig), TIMEOUT (600, seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NAMESPACE=${NAMESPACE:-unilingo}
RELEASE=${RELEASE:-unilingo}
TIMEOUT=${TIMEOUT:-600}
CREDENTIALS_SECRET=unilingo-credentials
export KUBECONFIG=${KUBECONFIG:-$ROOT/.run/kubeconfig}
KUBECTL=$ROOT/.tools/bin/kubectl
HELM=$ROOT/.tools/bin/helm
NODE_SOCKET=$ROOT/.run/cluster/node/containerd/containerd.sock

log() { printf '[deploy] %s\n' "$*" >&2; }
die() { printf '[deploy] ERROR: %s\n' "$*" >&2; exit 1; }
k() { "$KUBECTL" "$@"; }

# ---- 1. the cluster ------------------------------------------------------------------------
[[ -f $KUBECONFIG ]] || die "no kubeconfig at $KUBECONFIG: start 'make cluster' first"
k get --raw /readyz >/dev/null 2>&1 || die "the API server in $KUBECONFIG does not answer: is 'make cluster' running?"
k wait --for=condition=Ready node --all --timeout=60s >/dev/null \
  || die "no Ready node (make cluster --no-node has none)"
k get crd scaledobjects.keda.sh >/dev/null 2>&1 || die "KEDA's CRDs are missing: 'make cluster' installs them"
k wait --for=condition=Available apiservice v1beta1.external.metrics.k8s.io --timeout=120s >/dev/null \
  || die "KEDA's external metrics API is not available (see .run/cluster/logs/keda-*.log)"
log "1/5 cluster: node Ready, KEDA serving"

# ---- 2. images -----------------------------------------------------------------------------
have_image() { ctr --address "$NODE_SOCKET" --namespace k8s.io images ls -q | grep -qx "docker.io/library/$1"; }
for image in unilingo:dev unilingo-redis:dev; do
  if ! have_image "$image"; then
    archive=$ROOT/.run/images/${image//[:\/]/_}.tar
    [[ -f $archive ]] || die "the node has no $image and there is no $archive: run 'make image'"
    ctr --address "$NODE_SOCKET" --namespace k8s.io images import "$archive" >/dev/null
  fi
done
log "2/5 images: unilingo:dev and unilingo-redis:dev on the node"

# ---- 3. credentials ------------------------------------------------------------------------
k get namespace "$NAMESPACE" >/dev/null 2>&1 || k create namespace "$NAMESPACE" >/dev/null
if k -n "$NAMESPACE" get secret "$CREDENTIALS_SECRET" >/dev/null 2>&1; then
  log "3/5 Secret $CREDENTIALS_SECRET exists; keeping it"
else
  rand() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
  k -n "$NAMESPACE" create secret generic "$CREDENTIALS_SECRET" \
    --from-literal=SUPABASE_JWT_SECRET="$(rand)" --from-literal=WEBHOOK_SECRET="$(rand)" >/dev/null
  log "3/5 Secret $CREDENTIALS_SECRET created (generated JWT and webhook secrets)"
fi

# ---- 4. the chart --------------------------------------------------------------------------
log "4/5 helm upgrade --install $RELEASE charts/unilingo (namespace $NAMESPACE)"
values=(-f charts/unilingo/ci/node-values.yaml)
# The image's digest on every pod template: `make image` keeps the tag (unilingo:dev, never
# pulled), so without it a rebuilt image would not roll the pods that run the old one.
digest=$(ctr --address "$NODE_SOCKET" --namespace k8s.io images ls \
  | awk '$1 == "docker.io/library/unilingo:dev" {print $3}' | cut -d: -f2 | cut -c1-16)
for component in api workers.defaults operator; do
  values+=(--set-string "$component.podAnnotations.unilingo\\.io/image=$digest")
done
[[ -n ${EXTRA_VALUES:-} ]] && values+=(-f "$EXTRA_VALUES")
# CRDs that a chart with a crds/ folder installed belong to no release, and Helm takes over no
# object without its ownership labels: hand them to this release, so its templates upgrade them.
for crd in unilingoproviderpolicies.unilingo.io clusterkopfpeerings.kopf.dev kopfpeerings.kopf.dev; do
  k get crd "$crd" >/dev/null 2>&1 || continue
  [[ -z $(k get crd "$crd" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}') ]] || continue
  k label crd "$crd" app.kubernetes.io/managed-by=Helm --overwrite >/dev/null
  k annotate crd "$crd" meta.helm.sh/release-name="$RELEASE" meta.helm.sh/release-namespace="$NAMESPACE" \
    --overwrite >/dev/null
  log "4/5 CRD $crd adopted by release $RELEASE"
done
start=$SECONDS
"$HELM" upgrade --install "$RELEASE" charts/unilingo --namespace "$NAMESPACE" "${values[@]}" \
  --wait --timeout "${TIMEOUT}s"

# ---- 5. every pod Ready --------------------------------------------------------------------
# The release's pods that are not terminating (the `helm test` pod of an earlier run has
# completed: it is not one of the release's). Not `kubectl wait`: KEDA takes a new worker
# Deployment to zero at once, and a wait on a pod that is deleted meanwhile never ends.
NOT_READY='{{range .items}}{{if not .metadata.deletionTimestamp}}{{$ready := "False"}}{{range .status.conditions}}{{if eq .type "Ready"}}{{$ready = .status}}{{end}}{{end}}{{if ne $ready "True"}}{{.metadata.name}} {{end}}{{end}}{{end}}'
deadline=$((SECONDS + TIMEOUT))
while :; do
  not_ready=$(k -n "$NAMESPACE" get pods \
    -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component!=helm-test" -o go-template="$NOT_READY")
  [[ -z $not_ready ]] && break
  (( SECONDS < deadline )) || die "pods not Ready after ${TIMEOUT}s: $not_ready"
  sleep 2
done
log "5/5 every pod of $RELEASE Ready after $((SECONDS - start))s"
k -n "$NAMESPACE" get pods -o wide
k -n "$NAMESPACE" get scaledobjects 2>/dev/null || true

API_SVC=$(k -n "$NAMESPACE" get svc -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=api" -o name)
cat <<EOF

Unilingo is up on the local node, namespace '$NAMESPACE' (KUBECONFIG=$KUBECONFIG).

  API:         $KUBECTL -n $NAMESPACE port-forward $API_SVC 8081:80
               curl http://127.0.0.1:8081/api/health
  A token:     export SUPABASE_JWT_SECRET=\$($KUBECTL -n $NAMESPACE get secret $CREDENTIALS_SECRET -o jsonpath='{.data.SUPABASE_JWT_SECRET}' | base64 -d)
               TOKEN=\$(make -s token USER=me)
  Autoscaling: $KUBECTL -n $NAMESPACE get scaledobjects,hpa,deploy
  Smoke test:  $HELM -n $NAMESPACE test $RELEASE --logs
  Remove:      $HELM -n $NAMESPACE uninstall $RELEASE
EOF
