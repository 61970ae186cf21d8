#!/usr/bin/env bash
# `make kind-up`: the whole platform on a local kind cluster (needs a running Docker engine).
#
#   1. build the image (Dockerfile) as unilingo:dev
#   2. create the kind cluster from manifests/kind-cluster.yaml (kept if it already exists)
#   3. load the image into the kind node
#   4. install ingress-nginx (hostPorts on the node -> http://localhost:8080 on this machine)
#   5. install KEDA from its chart repository
#   6. create the credentials Secret (a generated JWT secret and webhook secret; OPENAI_API_KEY
#      and DATABASE_URL from this environment when set) unless it already exists
#   7. install charts/unilingo with charts/unilingo/ci/kind-values.yaml (the local image)
#   8. run `helm test` (a PDF job end to end) and print how to reach the API
#
# Tools: docker; kind, kubectl and helm from PATH, else from .tools/bin (`make tools` builds
# kubectl and helm; kind is built here from the Go module proxy when Go is available).
# Environment: KIND_CLUSTER (unilingo), KIND_NODE_IMAGE, NAMESPACE (unilingo), RELEASE
# (unilingo), IMAGE (unilingo:dev), SKIP_BUILD=1, SKIP_TEST=1, EXTRA_VALUES (a values file
# layered on top), OPENAI_API_KEY, DATABASE_URL.
# Tear down: kind delete cluster --name unilingo
set -euo pipefail

# ---- versions: pinned here -----------------------------------------------------------
KIND_VERSION=v0.30.0                # sigs.k8s.io/kind
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.34.0}
KEDA_CHART_VERSION=2.21.0           # the KEDA whose CRDs scripts/crds.sh validates against
INGRESS_NGINX_CHART_VERSION=4.12.1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER=${KIND_CLUSTER:-unilingo}
NAMESPACE=${NAMESPACE:-unilingo}
RELEASE=${RELEASE:-unilingo}
IMAGE=${IMAGE:-unilingo:dev}
CREDENTIALS_SECRET=unilingo-credentials

log() { printf '\n[kind-up] %s\n' "$*" >&2; }
die() { printf '[kind-up] ERROR: %s\n' "$*" >&2; exit 1; }

tool() {  # name -> path (PATH first, then .tools/bin)
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"
  elif [[ -x $ROOT/.tools/bin/$1 ]]; then echo "$ROOT/.tools/bin/$1"
  else return 1
  fi
}

# ---- 0. prerequisites ------------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "docker is not installed (kind runs its nodes as Docker containers)"
docker info >/dev/null 2>&1 || die "the Docker engine is not running (docker info failed)"
if ! KIND=$(tool kind); then
  GO=$(command -v go || echo /usr/local/go/bin/go)
  [[ -x $GO ]] || die "kind not found; install it (https://kind.sigs.k8s.io) or Go to build it"
  log "building kind $KIND_VERSION into .tools/bin (Go module proxy)"
  mkdir -p "$ROOT/.tools/bin"
  GOBIN="$ROOT/.tools/bin" GOWORK=off "$GO" install "sigs.k8s.io/kind@$KIND_VERSION"
  KIND="$ROOT/.tools/bin/kind"
fi
if ! KUBECTL=$(tool kubectl) || ! HELM=$(tool helm); then
  log "kubectl/helm not found: building them (make tools)"
  bash scripts/tools.sh kubectl helm
  KUBECTL=$(tool kubectl) || die "kubectl unavailable"
  HELM=$(tool helm) || die "helm unavailable"
fi
CONTEXT="kind-$CLUSTER"
k() { "$KUBECTL" --context "$CONTEXT" "$@"; }
h() { "$HELM" --kube-context "$CONTEXT" "$@"; }

# ---- 1. image --------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "1/8 building $IMAGE"
  DOCKER_BUILDKIT=1 docker build -t "$IMAGE" "$ROOT"
fi

# ---- 2. cluster ------------------------------------------------------------------------
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "2/8 kind cluster '$CLUSTER' exists; reusing it"
else
  log "2/8 creating kind cluster '$CLUSTER' ($KIND_NODE_IMAGE)"
  "$KIND" create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" \
    --config manifests/kind-cluster.yaml --wait 120s
fi

# ---- 3. image into the node ------------------------------------------------------------
log "3/8 loading $IMAGE into the kind node"
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

# ---- 4. ingress-nginx ------------------------------------------------------------------
log "4/8 installing ingress-nginx $INGRESS_NGINX_CHART_VERSION"
h upgrade --install ingress-nginx ingress-nginx \
  --repo https://kubernetes.github.io/ingress-nginx --version "$INGRESS_NGINX_CHART_VERSION" \
  --namespace ingress-nginx --create-namespace \
  --set controller.hostPort.enabled=true \
  --set controller.service.type=ClusterIP \
  --set-string controller.nodeSelector.ingress-ready=true \
  --set controller.tolerations[0].key=node-role.kubernetes.io/control-plane \
  --set controller.tolerations[0].operator=Exists \
  --set controller.tolerations[0].effect=NoSchedule \
  --set controller.ingressClassResource.default=true \
  --set controller.admissionWebhooks.enabled=false \
  --wait --timeout 5m

# ---- 5. KEDA ---------------------------------------------------------------------------
log "5/8 installing KEDA $KEDA_CHART_VERSION"
h upgrade --install keda keda \
  --repo https://kedacore.github.io/charts --version "$KEDA_CHART_VERSION" \
  --namespace keda --create-namespace --wait --timeout 5m

# ---- 6. credentials --------------------------------------------------------------------
k get namespace "$NAMESPACE" >/dev/null 2>&1 || k create namespace "$NAMESPACE"
if k -n "$NAMESPACE" get secret "$CREDENTIALS_SECRET" >/dev/null 2>&1; then
  log "6/8 Secret $CREDENTIALS_SECRET exists; keeping it"
else
  log "6/8 creating Secret $CREDENTIALS_SECRET (generated JWT and webhook secrets)"
  rand() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
  args=(--from-literal=SUPABASE_JWT_SECRET="$(rand)" --from-literal=WEBHOOK_SECRET="$(rand)")
  [[ -n ${OPENAI_API_KEY:-} ]] && args+=(--from-literal=OPENAI_API_KEY="$OPENAI_API_KEY")
  [[ -n ${DATABASE_URL:-} ]] && args+=(--from-literal=DATABASE_URL="$DATABASE_URL")
  k -n "$NAMESPACE" create secret generic "$CREDENTIALS_SECRET" "${args[@]}"
fi

# ---- 7. the chart ----------------------------------------------------------------------
log "7/8 installing charts/unilingo as release '$RELEASE' in namespace '$NAMESPACE'"
values=(-f charts/unilingo/ci/kind-values.yaml)
[[ -n ${EXTRA_VALUES:-} ]] && values+=(-f "$EXTRA_VALUES")
h upgrade --install "$RELEASE" charts/unilingo --namespace "$NAMESPACE" "${values[@]}" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --wait --timeout 10m

# ---- 8. smoke test and directions ------------------------------------------------------
if [[ ${SKIP_TEST:-0} != 1 ]]; then
  log "8/8 helm test (submits a PDF job and waits for it to succeed)"
  h test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout 5m
fi

API_SVC=$(k -n "$NAMESPACE" get svc -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=api" -o name)
cat <<EOF

Unilingo is up on kind cluster '$CLUSTER' (context $CONTEXT), namespace '$NAMESPACE'.

  API (through ingress-nginx):  curl http://localhost:8080/api/health
  or port-forward:              $KUBECTL --context $CONTEXT -n $NAMESPACE port-forward $API_SVC 8081:80
                                curl http://localhost:8081/api/health

  A bearer token (signed with the cluster's JWT secret):
    export SUPABASE_JWT_SECRET=\$($KUBECTL --context $CONTEXT -n $NAMESPACE get secret $CREDENTIALS_SECRET -o jsonpath='{.data.SUPABASE_JWT_SECRET}' | base64 -d)
    TOKEN=\$(make -s token USER=me)
    curl -H "Authorization: Bearer \$TOKEN" -F file=@some.pdf http://localhost:8080/api/process-pdf

  Autoscaling:   $KUBECTL --context $CONTEXT -n $NAMESPACE get scaledobjects,hpa,deploy
  Tear down:     $KIND delete cluster --name $CLUSTER
EOF
