# brewline in one image: built in a Rust image, run in a slim Debian with only what the binary
# links (librdkafka is built in, vendored; SQLite is bundled).
#   docker build -t brewline .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p brewline && cp target/release/brewline /usr/local/bin/brewline

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/brewline --create-home brewline
COPY --from=build /usr/local/bin/brewline /usr/local/bin/brewline
USER brewline
WORKDIR /var/lib/brewline
ENTRYPOINT ["brewline"]
CMD ["--help"]
