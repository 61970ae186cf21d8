#!/usr/bin/env bash
# Fetch the third-party CRDs the chart's objects are validated against, from the projects'
# own published sources, through the Go module proxy (the only source reachable here):
#
#   KEDA                 github.com/kedacore/keda/v2 config/crd/bases/
#                          keda.sh_scaledobjects.yaml, keda.sh_triggerauthentications.yaml
#   Prometheus operator  github.com/prometheus-operator/prometheus-operator
#                          example/prometheus-operator-crd/
#                          monitoring.coreos.com_servicemonitors.yaml,
#                          monitoring.coreos.com_podmonitors.yaml,
#                          monitoring.coreos.com_prometheusrules.yaml
#
# They land in a cache outside the repo,
#   ${UNILINGO_TOOLS_CACHE:-$HOME/.cache/unilingo-tools}/crds-keda-<v>-promop-<v>/
# and are copied to <repo>/.tools/crds/. Both steps are skipped when already done.
#
# Usage: scripts/crds.sh [--print-dir]   (--print-dir: print the .tools/crds path at the end)
set -euo pipefail

# ---- versions: the one place they are pinned -----------------------------------------
KEDA_VERSION=v2.21.0                 # keep in step with KEDA_CHART_VERSION in scripts/kind-up.sh
PROMETHEUS_OPERATOR_VERSION=v0.85.0

KEDA_FILES=(keda.sh_scaledobjects.yaml keda.sh_triggerauthentications.yaml)
PROMOP_FILES=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml
              monitoring.coreos.com_prometheusrules.yaml)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE_ROOT="${UNILINGO_TOOLS_CACHE:-$HOME/.cache/unilingo-tools}"
CACHE_DIR="$CACHE_ROOT/crds-keda-$KEDA_VERSION-promop-$PROMETHEUS_OPERATOR_VERSION"
OUT_DIR="$REPO_ROOT/.tools/crds"

export GOPATH="${GOPATH:-$HOME/go}"
export GOMODCACHE="${GOMODCACHE:-$GOPATH/pkg/mod}"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export GOWORK=off

log() { printf '[crds] %s\n' "$*" >&2; }
die() { printf '[crds] ERROR: %s\n' "$*" >&2; exit 1; }

all_present() {  # dir
  local f
  for f in "${KEDA_FILES[@]}" "${PROMOP_FILES[@]}"; do [[ -s $1/$f ]] || return 1; done
}

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
  else die "no Go toolchain found (looked on PATH and in /usr/local/go/bin)"
  fi
}

module_dir() {  # module version -> extracted module directory (read-only, in GOMODCACHE)
  local json dir
  # Run outside any module so that no go.mod around us interferes.
  json="$(cd "${TMPDIR:-/tmp}" && "$GO" mod download -json "$1@$2")" || die "go mod download $1@$2 failed"
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -d $dir ]] || die "go mod download $1@$2 gave no module directory"
  printf '%s\n' "$dir"
}

if ! all_present "$CACHE_DIR"; then
  GO="$(find_go)"
  log "fetching KEDA $KEDA_VERSION and Prometheus operator $PROMETHEUS_OPERATOR_VERSION CRDs via the Go module proxy"
  tmp="$(mktemp -d "$CACHE_ROOT/.crds.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE_ROOT"; mktemp -d "$CACHE_ROOT/.crds.XXXXXX"; })"
  trap 'rm -rf "$tmp"' EXIT
  keda_dir="$(module_dir github.com/kedacore/keda/v2 "$KEDA_VERSION")"
  for f in "${KEDA_FILES[@]}"; do
    [[ -s $keda_dir/config/crd/bases/$f ]] || die "$f missing from KEDA $KEDA_VERSION"
    cp "$keda_dir/config/crd/bases/$f" "$tmp/$f"
  done
  promop_dir="$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")"
  for f in "${PROMOP_FILES[@]}"; do
    [[ -s $promop_dir/example/prometheus-operator-crd/$f ]] || die "$f missing from prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
    cp "$promop_dir/example/prometheus-operator-crd/$f" "$tmp/$f"
  done
  chmod 0644 "$tmp"/*.yaml
  printf 'keda %s\nprometheus-operator %s\n' "$KEDA_VERSION" "$PROMETHEUS_OPERATOR_VERSION" >"$tmp/VERSIONS"
  mkdir -p "$(dirname "$CACHE_DIR")"
  rm -rf "$CACHE_DIR"
  mv "$tmp" "$CACHE_DIR"
  trap - EXIT
  log "cached in $CACHE_DIR"
else
  log "cached: $CACHE_DIR"
fi

if ! all_present "$OUT_DIR" || ! cmp -s "$CACHE_DIR/VERSIONS" "$OUT_DIR/VERSIONS"; then
  rm -rf "$OUT_DIR"
  mkdir -p "$OUT_DIR"
  cp "$CACHE_DIR"/*.yaml "$CACHE_DIR/VERSIONS" "$OUT_DIR/"
  log "copied to $OUT_DIR"
fi

if [[ ${1:-} == --print-dir ]]; then
  printf '%s\n' "$OUT_DIR"
fi
