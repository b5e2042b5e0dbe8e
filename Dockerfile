# Builds the one `agora` binary (templates, static files and migrations are compiled into it).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY templates templates
COPY static static
COPY migrations migrations
# Declared in Cargo.toml, so cargo wants it present even for a binary-only build.
COPY benches benches
RUN cargo build --release --bin agora

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/agora /usr/local/bin/agora
# Where the session secret is kept (a volume in docker-compose.yml); the volume takes this owner.
RUN mkdir -p /var/lib/agora && chown nobody /var/lib/agora
USER nobody
EXPOSE 8080
CMD ["agora", "serve"]
