#!/usr/bin/env bash
# Builds the sandbox image once per recipe; the recipe's hash is the image tag, so a changed
# recipe rebuilds and an unchanged one costs a `docker image inspect`.
#   With a registry: docker build from the Dockerfile. Offline: debootstrap + docker import.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=${DA_SANDBOX_IMAGE_REPO:-durable-agents/sandbox}
hash=$(cat "$here/build.sh" "$here/Dockerfile" | sha256sum | cut -c1-12)
cache=${DA_CACHE_DIR:-$HOME/.cache/durable-agents}
say() { printf '\033[1m[image]\033[0m %s\n' "$*"; }

if docker image inspect "$repo:$hash" >/dev/null 2>&1; then
  docker tag "$repo:$hash" "$repo:latest"; exit 0
fi
tarball="$cache/sandbox-rootfs-$hash.tar"
if [ ! -f "$tarball" ] && [ "${DA_IMAGE_FROM_REGISTRY:-0}" = 1 ]; then
  say "building $repo:$hash with docker build"
  docker build -q -t "$repo:$hash" "$here" && docker tag "$repo:$hash" "$repo:latest"; exit 0
fi
if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null 2>&1 || {
    [ "$(id -u)" = 0 ] || { echo "debootstrap is missing and we are not root" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  say "building the sandbox root filesystem with debootstrap (about a minute, once per recipe)"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,git,ca-certificates,procps \
    bookworm "$rootfs" >"$cache/debootstrap-$hash.log" 2>&1 \
    || { tail -20 "$cache/debootstrap-$hash.log"; exit 1; }
  chroot "$rootfs" /bin/sh -c 'groupadd -g 1000 agent && useradd -u 1000 -g 1000 -d /workspace -s /bin/bash agent \
    && mkdir -p /workspace && chown agent:agent /workspace \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc /usr/share/man /usr/share/locale'
  tar -C "$rootfs" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
fi
say "importing $repo:$hash"
docker import \
  --change 'USER agent' --change 'WORKDIR /workspace' --change 'ENV HOME=/workspace' \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'CMD ["sleep", "infinity"]' \
  "$tarball" "$repo:$hash" >/dev/null
docker tag "$repo:$hash" "$repo:latest"
