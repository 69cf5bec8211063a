# syntax=docker/dockerfile:1
# batchdrop container image.
#
# NOT BUILT HERE: these machines have no Docker engine. This file was reviewed line by line and
# linted (hadolint); its HEALTHCHECK is `batchdrop healthcheck`, tested in tests/operator.rs.
#
#   docker build -t batchdrop .
#   docker run -d --name batchdrop --stop-timeout 45 \
#       -v batchdrop-state:/var/lib/batchdrop -v /srv/drop:/srv/drop \
#       -p 127.0.0.1:9187:9187 batchdrop
#
# The default config (examples/docker/config.toml) targets the embedded emulator; mount your
# own at /etc/batchdrop/config.toml for the real platform. See docs/operating.md, "Docker".

# ---- build stage: the release binary ---------------------------------------------------------
# Official Rust image on Debian 12, the same glibc as the runtime stage below.
FROM rust:1-bookworm AS build
# Sources go here.
WORKDIR /src
# The whole tree minus .dockerignore (target/, var/, .git). No database is needed to build:
# the queries are checked at run time, and `sqlx::migrate!` only reads migrations/.
COPY . .
# --locked: exactly Cargo.lock's versions. The cache mounts (BuildKit) keep downloaded crates
# and compiled dependencies between builds; target/ is a cache mount, so the binary is copied
# out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/batchdrop /usr/local/bin/batchdrop

# ---- runtime stage ---------------------------------------------------------------------------
# Debian 12 slim: glibc for the binary (the HEALTHCHECK is the binary itself).
FROM debian:bookworm-slim
# CA certificates for HTTPS to the platform (rustls reads the system store); nothing else.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid/gid (10001), so volume ownership and Kubernetes' runAsUser/fsGroup can
# name it; the state dir is private, the drop dir group-writable and setgid (producers write
# as uid or gid 10001, e.g. docker run --group-add 10001).
RUN groupadd --system --gid 10001 batchdrop \
 && useradd --system --uid 10001 --gid batchdrop --home-dir /var/lib/batchdrop \
        --no-create-home --shell /usr/sbin/nologin batchdrop \
 && install -d -o batchdrop -g batchdrop -m 0700 /var/lib/batchdrop \
 && install -d -o batchdrop -g batchdrop -m 2770 /srv/drop
# The binary from the build stage.
COPY --from=build /usr/local/bin/batchdrop /usr/local/bin/batchdrop
# The default config: embedded platform, one drop folder at /srv/drop.
COPY examples/docker/config.toml /etc/batchdrop/config.toml
# Logs go to stderr (docker logs): plain text without colour codes.
ENV NO_COLOR=1
# Numeric, so that Kubernetes' runAsNonRoot can check it without looking up names.
USER 10001:10001
# The SQLite queue (must survive the container) and the drop folders. Both are created above
# with their owner before this line, so a new named volume starts with that ownership.
VOLUME ["/var/lib/batchdrop", "/srv/drop"]
# The admin listener (admin_listen): /metrics, /healthz, /readyz.
EXPOSE 9187
# SIGTERM is the graceful stop (the default; stated for clarity). Give it more than
# shutdown_grace (30 s): docker stop -t 45 / docker run --stop-timeout 45 (the default is 10 s).
STOPSIGNAL SIGTERM
# Liveness through GET /healthz. The slim image has no curl or wget, and batchdrop has no
# probe command, so bash (always present in Debian) speaks HTTP/1.0 over its /dev/tcp: no
# extra package, no extra attack surface. Healthy (0) = the status line says 200; anything
# else, a refused connection or no answer within 4 s exits 1 (unhealthy).
# `batchdrop healthcheck` asks the admin listener of the config's daemon (no curl needed).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["batchdrop", "healthcheck", "--timeout", "4s"]
# `docker run IMAGE check-config --config ...` etc. run the other subcommands.
ENTRYPOINT ["batchdrop"]
# The daemon on the default (or mounted) config.
CMD ["run", "--config", "/etc/batchdrop/config.toml"]
