#!/usr/bin/env bash
# `make image`: build the platform's image from the Dockerfile without a daemon (Debian's
# buildah, `bud --isolation chroot`), and a Redis image from Debian's redis-server, then load
# both into the containerd of the node `make cluster` runs.
#
#   1. the base: `debootstrap --variant=minbase` of Debian bookworm with python3 (3.11, the
#      Dockerfile's Python), cached as a tarball in $UNILINGO_IMAGES_CACHE
#      (default ~/.cache/unilingo-images) and committed as localhost/unilingo-python:bookworm
#   2. the Dockerfile, unchanged (docker build still builds it for `make kind-up`), with that
#      base as PYTHON_IMAGE -> unilingo:dev
#   3. images/redis/Dockerfile on the same base -> unilingo-redis:dev
#   4. `buildah push` to docker archives in .run/images/, `ctr images import` into the node
#      (skipped with a note when `make cluster` is not running; it imports them at start)
#
# buildah's layer store is cached in $UNILINGO_IMAGES_CACHE/buildah; each buildah command runs
# in a private mount namespace, so none of its mounts outlives it on the host.
# Environment: IMAGE (unilingo:dev), REDIS_IMAGE (unilingo-redis:dev), DEBIAN_MIRROR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${UNILINGO_IMAGES_CACHE:-$HOME/.cache/unilingo-images}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
BASE_TAR="$CACHE/debian-$SUITE-minbase-python3.tar"
BASE_IMAGE=localhost/unilingo-python:$SUITE
IMAGE="${IMAGE:-unilingo:dev}"
REDIS_IMAGE="${REDIS_IMAGE:-unilingo-redis:dev}"
OUT="$ROOT/.run/images"
NODE_SOCKET="$ROOT/.run/cluster/node/containerd/containerd.sock"
# The machine's CA bundle, mounted into the build so pip reaches the package index through
# whatever TLS inspection this network does; it is not copied into the image.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

for cmd in buildah debootstrap unshare; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found: run 'bash scripts/bootstrap.sh node'"
done
mkdir -p "$CACHE" "$OUT"

buildah() {  # each call in its own mount namespace: its storage mounts die with it
  unshare --mount --propagation private \
    buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/runroot" \
            --storage-driver overlay "$@"
}

# ---- 1. base ------------------------------------------------------------------------------
if [[ ! -f $BASE_TAR ]]; then
  log "debootstrap $SUITE (minbase + $BASE_PACKAGES) ..."
  start=$SECONDS
  work="$(mktemp -d "${TMPDIR:-/tmp}/unilingo-base.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  unshare --mount --propagation private \
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin \
         "$work"/rootfs/var/cache/apt/archives/*.deb
  # pip trusts the system bundle (the one the build mounts in), not its own copy.
  printf '[global]\ncert = %s\n' "$CA_BUNDLE" >"$work/rootfs/etc/pip.conf"
  tar -C "$work/rootfs" --numeric-owner -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$work"; trap - EXIT
  log "base built in $((SECONDS - start))s -> $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
fi
if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  log "committing $BASE_IMAGE from $BASE_TAR"
  ctr="$(buildah from scratch)"
  buildah add "$ctr" "$BASE_TAR" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                 --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --rm "$ctr" "$BASE_IMAGE" >/dev/null
fi

# ---- 2./3. the images ----------------------------------------------------------------------
build() {  # tag dockerfile context build-args...
  local tag=$1 file=$2 context=$3; shift 3
  log "buildah bud $file -> $tag ..."
  local start=$SECONDS
  buildah bud --isolation chroot --layers --pull=never -f "$file" -t "localhost/$tag" \
    --volume "$CA_BUNDLE:$CA_BUNDLE:ro" "$@" "$context"
  log "$tag built in $((SECONDS - start))s"
}
build "$IMAGE" Dockerfile . --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
build "$REDIS_IMAGE" images/redis/Dockerfile images/redis --build-arg "BASE_IMAGE=$BASE_IMAGE"

# ---- 4. into the node ----------------------------------------------------------------------
for tag in "$IMAGE" "$REDIS_IMAGE"; do
  archive="$OUT/${tag//[:\/]/_}.tar"
  rm -f "$archive"
  buildah push "localhost/$tag" "docker-archive:$archive:$tag" >/dev/null
  log "$tag -> $archive ($(du -h "$archive" | cut -f1))"
  if [[ -S $NODE_SOCKET ]]; then
    ctr --address "$NODE_SOCKET" --namespace k8s.io images import "$archive" >/dev/null
    # The stamp devstack/node.py checks before importing the archive again at its start.
    mkdir -p "$ROOT/.run/cluster/node/containerd/imported"
    touch "$ROOT/.run/cluster/node/containerd/imported/$(basename "$archive")"
    log "$tag imported into the node (docker.io/library/$tag)"
  fi
done
[[ -S $NODE_SOCKET ]] || log "the node is not running: 'make cluster' imports .run/images/*.tar when it starts"
