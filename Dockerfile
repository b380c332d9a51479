# syntax=docker/dockerfile:1

FROM rust:1-bookworm AS builder
WORKDIR /src
# Only what the build reads: the whole tree would drag target/ into the context's layers.
# benches/ is there because Cargo.toml names its targets (cargo refuses a manifest whose declared
# targets are missing); templates/, migrations/ and static/ are embedded at compile time.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY templates ./templates
COPY migrations ./migrations
COPY static ./static
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keyward \
    && install -m 0755 target/release/keyward /usr/local/bin/keyward

FROM debian:bookworm-slim
# ca-certificates: the AWS endpoints are HTTPS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home keyward \
    && mkdir /data && chown keyward:keyward /data
COPY --from=builder /usr/local/bin/keyward /usr/local/bin/keyward
USER keyward
# /data holds keyward.toml (read when present) and the default SQLite database keyward.db.
WORKDIR /data
VOLUME /data
# Loopback inside a container is unreachable from outside it.
ENV KEYWARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["keyward"]
CMD ["serve"]
