#!/usr/bin/env bash
# Builds the toolcell base image without any registry: a Debian bookworm minbase root
# filesystem made by debootstrap, imported with `docker import` (design/MACHINE.md).
#
#   sandboxes/base/build.sh [IMAGE]        IMAGE defaults to toolcell/base
#
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
# Needs root (debootstrap creates device nodes and chowns files) and a reachable Debian mirror.
# Users who can pull from a registry may skip this image entirely and build the others with
# `--build-arg BASE=debian:bookworm-slim`.
set -euo pipefail

IMAGE=${1:-toolcell/base}
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { printf 'base: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { say "must run as root (debootstrap)"; exit 1; }
command -v debootstrap >/dev/null || { say "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
command -v docker >/dev/null || { say "the docker CLI is not installed"; exit 1; }

ROOTFS=$(mktemp -d /tmp/toolcell-base.XXXXXX)
cleanup() { rm -rf --one-file-system "$ROOTFS"; }
trap cleanup EXIT

say "debootstrap --variant=minbase $SUITE ($MIRROR)"
debootstrap --variant=minbase --include=busybox-static "$SUITE" "$ROOTFS" "$MIRROR"

say "installing the warm-pool launcher /opt/toolcell/sh (sandboxes/install-launcher.sh)"
install -m 0755 "$(dirname "$0")/../install-launcher.sh" "$ROOTFS/tmp/install-launcher.sh"
chroot "$ROOTFS" /bin/sh /tmp/install-launcher.sh
rm "$ROOTFS/tmp/install-launcher.sh"

say "configuring apt sources and trimming caches"
cat > "$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
# Keep images small: no docs/man pages/locales from later apt-get installs (like debian:*-slim).
cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/01-toolcell-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
SLIM
cat > "$ROOTFS/etc/apt/apt.conf.d/01-toolcell" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* || true
: > "$ROOTFS/etc/hostname"

say "docker import -> $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "toolcell base: debootstrap --variant=minbase $SUITE" \
  - "$IMAGE"
say "done: $IMAGE"
