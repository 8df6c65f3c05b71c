# syntax=docker/dockerfile:1
# HeatBridge: redis-server with the heatbridge module loaded from redis.conf.example.
#   docker build -t heatbridge .
#   docker run -p 6379:6379 -p 8070:8070 -p 8071:8071 heatbridge
# Redis on 6379, Prometheus /metrics on 8070, /health on 8071 (all interfaces in the container).

# Builder: the module is a cdylib; redis-module's bindgen needs libclang. The builder is
# bookworm, like the runtime image, so the module links against the same glibc.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev=1:14.0-55.7~deb12u1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --lib \
 && strip --strip-debug target/release/libheatbridge.so

# Runtime: the official Redis image (7.2 has post-notification jobs, so the lookup keys exist
# before the XADD reply).
FROM redis:7.2.7-bookworm
COPY --from=build /src/target/release/libheatbridge.so /usr/local/lib/redis/modules/libheatbridge.so
# The config and its directory belong to redis, so that CONFIG REWRITE (which writes a temp
# file next to the config, then renames it) can persist CONFIG SET changes.
RUN mkdir -p /usr/local/etc/redis && chown 999:999 /usr/local/etc/redis
COPY --chown=999:999 redis.conf.example /usr/local/etc/redis/redis.conf
# The image's redis user (uid and gid 999); the server never runs as root.
USER 999:999
WORKDIR /data
EXPOSE 6379 8070 8071
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["sh", "-c", "redis-cli -p 6379 HEATBRIDGE.HEALTH | grep -Eq '\"status\": ?\"(ok|degraded)\"'"]
# Listen on every interface inside the container (Redis and the exporter); the protected
# mode of the official image is off, so put a password (requirepass or ACL) in front of any
# network you do not trust.
CMD ["redis-server", "/usr/local/etc/redis/redis.conf", \
     "--dir", "/data", \
     "--bind", "*", "-::*", \
     "--heatbridge.bind", "0.0.0.0"]
