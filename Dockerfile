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
ENTRYPOINT ["node", "/app/bin/matrix-edge.js"]
CMD ["start", "--config", "/etc/matrix-edge/matrix-edge.yaml"]
