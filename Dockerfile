# matrix-edge on Node 24 LTS.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY bin ./bin
RUN npm ci --ignore-scripts && npx tsc -p tsconfig.build.json && npm prune --omit=dev --ignore-scripts

FROM node:24-bookworm-slim
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY package.json ./
COPY config ./config
VOLUME ["/data"]
EXPOSE 80 443 8448
# Liveness from the admin listener (127.0.0.1:9090 inside the container, the default; with admin
# off or elsewhere, change or drop this). /healthz, not /readyz: a homeserver that is down should
# not make the edge itself look broken. Reload the config with `docker kill -s HUP <container>`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["node", "-e", "require('http').get('http://127.0.0.1:9090/healthz', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/matrix-edge.js"]
CMD ["start", "--config", "/etc/matrix-edge/matrix-edge.yaml"]
