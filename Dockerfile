# syntax=docker/dockerfile:1
#
# outbox-relay image: `docker build -t outbox-relay .` then
#   docker run --rm -e OUTBOX_DATABASE_URL=… -e OUTBOX_AMQP_URL=… outbox-relay          (the daemon)
#   docker run --rm -e OUTBOX_DATABASE_URL=… outbox-relay migrate                       (any CLI command)
#
# Based on Debian slim (glibc), like the machines the lock file was resolved on.
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: all dependencies, TypeScript → dist/ -------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Lock files first, so the dependency layer is cached until they change.
# --ignore-scripts: `prepare` would run `tsc` before src/ is copied; no dependency
# needs an install script to compile (the ones that have one are optional dev tools).
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, compiled code, migrations ----------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: skips `prepare` (there is no TypeScript compiler here).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY migrations ./migrations

# Files stay owned by root and read-only for the process; it writes nothing to disk.
USER node
EXPOSE 9464

# /healthz: 200 while the process is alive and its loop is not stuck (docs/runbook.md, "Metrics and health").
# No curl in slim images: Node's own fetch. Assumes OUTBOX_HTTP_HOST listens on
# loopback (the default 0.0.0.0 does) and a fixed OUTBOX_HTTP_PORT (not 0).
# Only `run` serves HTTP: give one-shot commands (migrate, status, …) --no-healthcheck
# or `healthcheck: {disable: true}` in compose.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.OUTBOX_HTTP_PORT||9464)+'/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# Exec form: node is PID 1 and receives SIGTERM itself; `run` installs the handler
# that drains the in-flight batch within OUTBOX_SHUTDOWN_TIMEOUT_MS and exits 0.
ENTRYPOINT ["node", "--max-semi-space-size=2", "bin/outbox-relay.js"]
CMD ["run"]
