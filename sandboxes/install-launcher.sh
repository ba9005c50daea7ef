#!/bin/sh
# Installs the warm pool's launcher (src/backends/container/launcher.ts) into the root it runs
# in, as root: a static busybox at /opt/toolcell/sh, root-owned, mode 0111 (execute only). A
# process that execs a binary it may not read is made non-dumpable by the kernel (fs/exec.c
# would_dump), so the tool, same uid, cannot read its launcher's memory, environment or fds,
# nor ptrace it (ptrace_may_access). busybox-static is installed for the copy (apt-get, unless
# already there, e.g. from debootstrap --include) and purged afterwards.
#
# The one place that installs it, for every image: the Dockerfiles run it (`COPY
# install-launcher.sh` from the sandboxes/ build context, then `RUN sh ...`), whatever their
# BASE; sandboxes/base/build.sh runs it in its debootstrap root with chroot.
set -eu
export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends busybox-static
fi
install -d -m 0755 /opt/toolcell
install -o root -g root -m 0111 /bin/busybox /opt/toolcell/sh
dpkg --purge busybox-static
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
