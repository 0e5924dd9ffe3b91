# txrelay container image. Not built on the machine it was written on (no Docker there): check
# it with `docker build .` before relying on it. See docs/deploy.md.
#
# Node 24 runs the TypeScript sources directly (type stripping): there is no build step, and the
# image holds bin/, src/, migrations/, templates/ and the production dependencies.

FROM node:24-bookworm-slim AS deps
WORKDIR /app
# isolated-vm ships prebuilt binaries for Node 24 on glibc; the toolchain is only its fallback.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make python3 \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force

FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    TXRELAY_DATA_DIR=/var/lib/txrelay \
    TXRELAY_SMTP_PORTS=2525 \
    TXRELAY_SMTPS_PORTS=2465 \
    TXRELAY_HTTP_PORT=8080
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
# The data dir holds nothing in production (DATABASE_URL set, TLS files mounted), but a missing
# certificate is generated into it; it must be writable by the unprivileged user.
RUN mkdir -p /var/lib/txrelay && chown node:node /var/lib/txrelay
USER node
# Unprivileged ports inside the container; publish 587 and 465 on the host (docker-compose.yml).
EXPOSE 2525 2465 8080
# SIGTERM: stop accepting, finish transactions and deliveries in flight (up to 30 s), exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/txrelay.js"]
CMD ["start"]
