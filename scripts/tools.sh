#!/usr/bin/env bash
# Build the Go-built tools of the local stack from the Go module proxy: the control plane
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, helm, promtool and,
# when it builds, the prometheus server) and the node of `make cluster` (kubelet, kube-proxy,
# CoreDNS, KEDA's operator and metrics adapter).
#
# Each binary is built once in a throwaway wrapper module into a cache outside the repo,
#   ${UNILINGO_TOOLS_CACHE:-$HOME/.cache/unilingo-tools}/<name>-<version>/<name>
# and linked into <repo>/.tools/bin/. A binary already in the cache is reused.
#
# Usage: scripts/tools.sh [--force] [--list] [TOOL|GROUP...]
#   TOOL     one or more of: kube-apiserver etcd kube-controller-manager kubectl helm
#            promtool prometheus kube-scheduler kubelet kube-proxy coredns keda-operator
#            keda-adapter
#            (default: all; prometheus is optional and skipped quietly if it fails)
#   GROUP    control-plane: what `make test` runs (the control plane without a node, helm,
#            promtool, prometheus); node: what `make cluster` adds (scheduler, node, KEDA)
#   --force  rebuild even when the cached binary exists
#   --list   print the tools, their versions and cache paths, then exit
set -euo pipefail

# ---- versions: the one place they are pinned -------------------------------------
K8S_VERSION=v1.34.4          # k8s.io/kubernetes: kube-apiserver, kube-controller-manager, kubectl,
                             # kube-scheduler, kubelet, kube-proxy (1.35 refuses cgroup v1 hosts)
ETCD_VERSION=v3.6.16         # go.etcd.io/etcd/server/v3
HELM_VERSION=v3.19.5         # helm.sh/helm/v3
PROMETHEUS_VERSION=v0.316.0  # github.com/prometheus/prometheus (= Prometheus 3.16.0)
COREDNS_VERSION=v1.14.7      # github.com/coredns/coredns
KEDA_VERSION=v2.21.0         # github.com/kedacore/keda/v2: keda-operator, keda-adapter

ALL_TOOLS=(kube-apiserver etcd kube-controller-manager kubectl helm promtool prometheus
           kube-scheduler kubelet kube-proxy coredns keda-operator keda-adapter)
OPTIONAL_TOOLS=" prometheus "
CONTROL_PLANE_TOOLS=(kube-apiserver etcd kube-controller-manager kubectl helm promtool prometheus)
NODE_TOOLS=(kube-scheduler kubelet kube-proxy coredns keda-operator keda-adapter)

# ---- locations ----------------------------------------------------------------------
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
BIN_DIR="$REPO_ROOT/.tools/bin"
CACHE_DIR="${UNILINGO_TOOLS_CACHE:-$HOME/.cache/unilingo-tools}"

# Go caches that persist across runs (and across clones of the repo).
export GOPATH="${GOPATH:-$HOME/go}"
export GOMODCACHE="${GOMODCACHE:-$GOPATH/pkg/mod}"
export GOCACHE="${GOCACHE:-$HOME/.cache/go-build}"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
export GOWORK=off
export CGO_ENABLED="${CGO_ENABLED:-0}"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
# GOTOOLCHAIN is left as the caller has it (`local` by default). If a pinned version ever
# needs a newer Go, `export GOTOOLCHAIN=go1.27.3` before running this script.

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
  else die "no Go toolchain found (looked on PATH and in /usr/local/go/bin)"
  fi
}
GO="$(find_go)"

# ---- per-tool description -------------------------------------------------------------
# Sets: T_MODULE T_VERSION T_PKG T_TAGS T_LDFLAGS T_VERSION_CMD
describe() {
  T_TAGS=""
  T_LDFLAGS=""
  case "$1" in
    kube-apiserver|kube-controller-manager|kubectl|kube-scheduler|kubelet|kube-proxy)
      T_MODULE=k8s.io/kubernetes; T_VERSION=$K8S_VERSION; T_PKG="k8s.io/kubernetes/cmd/$1"
      local v=${K8S_VERSION#v} major minor
      major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
      local key val
      for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
                "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
        key=${kv%%=*}; val=${kv#*=}
        T_LDFLAGS+=" -X k8s.io/client-go/pkg/version.$key=$val -X k8s.io/component-base/version.$key=$val"
      done
      if [[ $1 == kubectl ]]; then T_VERSION_CMD="version --client"; else T_VERSION_CMD="--version"; fi
      ;;
    etcd)
      T_MODULE=go.etcd.io/etcd/server/v3; T_VERSION=$ETCD_VERSION; T_PKG=go.etcd.io/etcd/server/v3
      T_VERSION_CMD="--version"
      ;;
    helm)
      T_MODULE=helm.sh/helm/v3; T_VERSION=$HELM_VERSION; T_PKG=helm.sh/helm/v3/cmd/helm
      T_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      T_VERSION_CMD="version"
      ;;
    promtool|prometheus)
      T_MODULE=github.com/prometheus/prometheus; T_VERSION=$PROMETHEUS_VERSION
      T_PKG="github.com/prometheus/prometheus/cmd/$1"
      # Module v0.MMM.P is Prometheus 3.(MMM-300).P
      local rest=${PROMETHEUS_VERSION#v0.} mmm patch
      mmm=${rest%%.*}; patch=${rest#*.}
      local pv="3.$((10#$mmm - 300)).$patch"
      T_LDFLAGS="-X github.com/prometheus/common/version.Version=$pv -X github.com/prometheus/common/version.Branch=HEAD -X github.com/prometheus/common/version.BuildUser=unilingo-tools -X github.com/prometheus/common/version.BuildDate=19700101-00:00:00"
      T_VERSION_CMD="--version"
      if [[ $1 == prometheus ]]; then T_TAGS="builtinassets"; fi
      ;;
    coredns)
      T_MODULE=github.com/coredns/coredns; T_VERSION=$COREDNS_VERSION; T_PKG=github.com/coredns/coredns
      T_LDFLAGS="-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
      T_VERSION_CMD="-version"
      ;;
    keda-operator|keda-adapter)
      T_MODULE=github.com/kedacore/keda/v2; T_VERSION=$KEDA_VERSION
      T_PKG="github.com/kedacore/keda/v2/cmd/${1#keda-}"
      T_LDFLAGS="-X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v} -X github.com/kedacore/keda/v2/version.GitCommit=$KEDA_VERSION"
      T_VERSION_CMD="--help"  # neither has a version flag; --help proves the binary runs
      ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
  esac
}

# ---- wrapper module -----------------------------------------------------------------------
# go.mod of the module we build from (downloaded through the proxy).
module_gomod() {
  local json
  if ! json="$("$GO" mod download -json "$1@$2" 2>&1)"; then
    log "go mod download $1@$2 failed: $(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p')"
    return 1
  fi
  printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# Every k8s.io/* module that k8s.io/kubernetes' go.mod requires at v0.0.0 or replaces with
# ./staging/..., pinned to the matching published v0.<minor>.<patch>.
k8s_staging_replaces() {
  local gomod=$1 staging_version="v0.${K8S_VERSION#v1.}"
  {
    grep -Eo '^[[:space:]]*k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0$' "$gomod" | awk '{print $1}'
    grep -Eo '^[[:space:]]*(replace[[:space:]]+)?k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$gomod" \
      | sed -E 's/^[[:space:]]*(replace[[:space:]]+)?//' | awk '{print $1}'
  } | sort -u | while read -r mod; do
    printf '\t%s => %s %s\n' "$mod" "$mod" "$staging_version"
  done
}

module_replaces() {  # go.mod -> its `replace` lines whose target is a module version
  awk '
    /^replace[[:space:]]*\($/ { inblock = 1; next }
    inblock && /^\)/ { inblock = 0; next }
    inblock { line = $0 }
    !inblock && /^replace[[:space:]]/ { line = $0; sub(/^replace[[:space:]]+/, "", line) }
    line != "" {
      split(line, parts, "=>"); target = parts[2]; gsub(/^[[:space:]]+/, "", target)
      if (target !~ /^\./ && target !~ /^\//) print "replace " line
      line = ""
    }
  ' "$1"
}

write_wrapper() {  # dir tool
  local dir=$1 tool=$2 gomod goline
  gomod="$(module_gomod "$T_MODULE" "$T_VERSION")" || die "could not download $T_MODULE@$T_VERSION"
  [[ -f $gomod ]] || die "no go.mod for $T_MODULE@$T_VERSION"
  # Same language/GODEBUG baseline as the module itself.
  goline="$(grep -E '^go [0-9]' "$gomod" | head -n1)"
  {
    echo "module unilingo.local/tools/$tool"
    echo
    echo "${goline:-go 1.24.0}"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "tool $T_PKG"
    echo
    echo "require $T_MODULE $T_VERSION"
    if [[ $T_MODULE == k8s.io/kubernetes ]]; then
      echo
      echo "replace ("
      k8s_staging_replaces "$gomod"
      echo ")"
    else
      # A dependency's replace directives do not apply to the module that requires it:
      # carry over the ones that point at another module version (not at a local path).
      module_replaces "$gomod"
    fi
  } >"$dir/go.mod"
}

helm_k8s_ldflags() {  # dir -> -X flags for the Kubernetes version helm assumes
  local v
  v="$(cd "$1" && "$GO" list -m -f '{{.Version}}' k8s.io/client-go)"  # v0.MINOR.PATCH
  local minor=${v#v0.}; minor=${minor%%.*}
  printf ' -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=%s' "$minor"
  printf ' -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=%s' "$minor"
}

go_build() {  # dir out tags
  local dir=$1 out=$2 tags=$3
  (cd "$dir" && nice -n 10 "$GO" build -trimpath ${tags:+-tags "$tags"} \
      -ldflags "-s -w $T_LDFLAGS" -o "$out" "$T_PKG")
}

# ---- one tool (runs in its own process, so `set -e` holds throughout) ---------------------
build_tool() {
  local tool=$1
  describe "$tool"
  local dest_dir="$CACHE_DIR/$tool-$T_VERSION" dest="$CACHE_DIR/$tool-$T_VERSION/$tool"

  mkdir -p "$dest_dir"
  # One build per tool at a time, also across concurrent runs of this script.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$dest_dir/.lock"
    flock 9
  fi
  if [[ -x $dest && $FORCE -eq 0 ]]; then
    log "$tool $T_VERSION: cached ($dest)"
  else
    log "$tool $T_VERSION: building $T_PKG (wrapper module, go mod tidy, go build) ..."
    local start=$SECONDS
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/unilingo-tools-$tool.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    write_wrapper "$WORK" "$tool"
    if ! (cd "$WORK" && "$GO" mod tidy) >"$WORK/tidy.log" 2>&1; then
      cat "$WORK/tidy.log" >&2
      die "$tool: go mod tidy failed (wrapper go.mod above is in $WORK, removed on exit)"
    fi
    log "$tool: $(grep -c '^go: downloading' "$WORK/tidy.log" || true) modules downloaded," \
        "resolved in $((SECONDS - start))s; compiling (nice -n 10) ..."
    if [[ $tool == helm ]]; then T_LDFLAGS+="$(helm_k8s_ldflags "$WORK")"; fi
    if ! go_build "$WORK" "$WORK/$tool" "$T_TAGS"; then
      [[ $tool == prometheus ]] || exit 1
      # builtinassets needs the generated web UI bundle, which the module zip lacks.
      # Without it the server works (API, rules, scraping); only the web UI pages are absent.
      log "prometheus: -tags builtinassets failed; building without the embedded web UI"
      go_build "$WORK" "$WORK/$tool" ""
    fi
    mv -f "$WORK/$tool" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    log "$tool $T_VERSION: built in $((SECONDS - start))s -> $dest"
  fi

  mkdir -p "$BIN_DIR"
  ln -sfn "$dest" "$BIN_DIR/$tool"
  local ver
  # shellcheck disable=SC2086
  ver="$("$BIN_DIR/$tool" $T_VERSION_CMD 2>&1)" || { log "$tool: '$tool $T_VERSION_CMD' failed: $ver"; exit 1; }
  log "$tool: ok: $(printf '%s' "$ver" | head -n1)"
}

# ---- main ----------------------------------------------------------------------------------
FORCE=${UNILINGO_TOOLS_FORCE:-0}
LIST=0
TOOLS=()
if [[ ${1:-} == --one ]]; then  # internal: build one tool in this process
  build_tool "$2"
  exit 0
fi
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --list) LIST=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $arg" ;;
    control-plane) TOOLS+=("${CONTROL_PLANE_TOOLS[@]}") ;;
    node) TOOLS+=("${NODE_TOOLS[@]}") ;;
    *) describe "$arg"; TOOLS+=("$arg") ;;
  esac
done
[[ ${#TOOLS[@]} -gt 0 ]] || TOOLS=("${ALL_TOOLS[@]}")

if [[ $LIST -eq 1 ]]; then
  for t in "${TOOLS[@]}"; do
    describe "$t"
    printf '%-15s %-9s %s\n' "$t" "$T_VERSION" "$CACHE_DIR/$t-$T_VERSION/$t"
  done
  exit 0
fi

log "$("$GO" version); cache: $CACHE_DIR; bin: $BIN_DIR"
failed=()
total_start=$SECONDS
for t in "${TOOLS[@]}"; do
  if ! UNILINGO_TOOLS_FORCE=$FORCE bash "$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")" --one "$t"; then
    log "$t: build FAILED (see the messages above)"
    if [[ $OPTIONAL_TOOLS == *" $t "* ]]; then
      log "$t: optional, skipped (it did not build)"
      rm -f "$BIN_DIR/$t"
    else
      failed+=("$t")
    fi
  fi
done
log "all done in $((SECONDS - total_start))s"
if [[ ${#failed[@]} -gt 0 ]]; then
  die "failed: ${failed[*]}"
fi
