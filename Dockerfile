# toolcell as a shared execution service: MCP over Streamable HTTP on port 8080.
#
# Build (no registry needed: BASE is the local debootstrap image from sandboxes/base/build.sh;
# with a registry, --build-arg BASE=debian:bookworm-slim works the same):
#   docker build -t toolcell/service .
#
# Run (isolate tools only):
#   docker run -d --name toolcell -p 127.0.0.1:8080:8080 \
#     -v /etc/toolcell/config.json:/etc/toolcell/config.json:ro toolcell/service
#
# Container tools need a Docker engine. WARNING: access to the Docker socket is root on that
# host; whoever controls this container (or its config) controls the host. Either mount the
# socket and add its group (the image runs as uid 10001, not root):
#   docker run -d -p 127.0.0.1:8080:8080 -v /etc/toolcell/config.json:/etc/toolcell/config.json:ro \
#     -v /var/run/docker.sock:/var/run/docker.sock --group-add "$(stat -c %g /var/run/docker.sock)" \
#     toolcell/service
# or reach a remote engine over TLS (dockerode reads the standard variables):
#   docker run ... -e DOCKER_HOST=tcp://docker.internal:2376 -e DOCKER_TLS_VERIFY=1 \
#     -e DOCKER_CERT_PATH=/certs -v /path/to/client-certs:/certs:ro toolcell/service
#
# The config (see src/policy/service-config.ts) must configure apiKeys or oauth, and "tls": the
# service binds 0.0.0.0 inside the container and refuses to start without authentication and
# either a certificate ("tls": {"cert": ..., "key": ...}) or "tls": {"terminatedBy": "proxy"}.

ARG BASE=toolcell/base

# ---- build: Debian's npm installs the locked dependencies, which bring Node 24 (npm package
# "node") and isolated-vm's prebuilt binary; `npm ci` runs `prepare` (tsc + tool bundles) on
# Node 24 from node_modules/.bin. isolated-vm is then rebuilt from source with toolcell's
# patches to its native code (patches/, scripts/build-isolated-vm.mjs: Node 24's headers from
# node_modules, upstream node-gyp from the npm registry as on the host, since Debian's is patched
# for Debian's own Node; build-essential; about 3 min of CPU) and self-tested, so the service runs
# the fixed binary. Dev dependencies are pruned afterwards.
# EXTRA_CA_CERTS: PEM text of extra CA certificates the build must trust to reach the npm
# registry (a TLS-intercepting egress proxy), e.g.
#   --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"
# Used in this build stage only; the runtime image does not carry it.
FROM ${BASE} AS build
ARG EXTRA_CA_CERTS=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates build-essential python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt && update-ca-certificates; fi
ENV npm_config_cafile=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
COPY scripts ./scripts
COPY patches ./patches
COPY src ./src
COPY tools ./tools
COPY profiles ./profiles
COPY sandboxes ./sandboxes
RUN npm ci --no-audit --no-fund \
 && node_modules/.bin/node --version | grep -q '^v24\.' \
 && npm install --global --no-audit --no-fund node-gyp@12.4.0 \
 && node_modules/.bin/node scripts/build-isolated-vm.mjs --node-gyp /usr/local/lib/node_modules/node-gyp/bin/node-gyp.js \
 && npm prune --omit=dev --no-audit --no-fund \
 && node_modules/.bin/node scripts/build-isolated-vm.mjs --check \
 && rm -rf /root/.npm /root/.cache

# ---- runtime: the same base, no npm, no compiler; Node 24 from node_modules.
FROM ${BASE}
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/tools ./tools
COPY --from=build /src/profiles ./profiles
COPY --from=build /src/sandboxes ./sandboxes
ENV PATH=/app/node_modules/node/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    NODE_ENV=production \
    HOME=/tmp \
    TOOLCELL_LOG_LEVEL=info
# Nothing in /app is writable by the service user.
USER 10001:10001
EXPOSE 8080
LABEL org.opencontainers.image.title="toolcell/service" \
      org.opencontainers.image.description="toolcell: sandboxed MCP tool execution over Streamable HTTP"
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--no-node-snapshot", "--max-semi-space-size=4", "--max-old-space-size=512", "dist/cli.js"]
CMD ["serve", "--http", "0.0.0.0:8080", "--config", "/etc/toolcell/config.json"]
