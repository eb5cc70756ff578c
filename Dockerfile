# syntax=docker/dockerfile:1
#
# popgate container image: a multi-stage build that compiles the release binary with the locked
# dependency set and copies it alone into a distroless runtime running as a non-root user.
#
#   docker build -t popgate:dev .
#   docker run --rm -v "$PWD:/etc/popgate:ro" popgate:dev check --config /etc/popgate/routes.yaml
#
# See examples/README.md for running it with a config, and examples/kubernetes/ for a DaemonSet.

# Build stage. Debian bookworm to match the runtime's glibc (distroless cc-debian12). The slim
# image already has gcc and libc6-dev, which is all aws-lc-sys needs: on Linux it builds with the
# `cc` crate from pregenerated bindings, so neither cmake nor clang is installed. jemalloc
# (popgate's allocator, built by tikv-jemalloc-sys) needs `make` as well.
ARG RUST_IMAGE=rust:1-slim-bookworm
FROM ${RUST_IMAGE} AS build
# `.git` is not in the build context (.dockerignore), so popgate_build_info's commit label is
# `unknown` unless given: docker build --build-arg POPGATE_GIT_COMMIT=$(git rev-parse HEAD) .
ARG POPGATE_GIT_COMMIT=
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crate registry and the target directory between builds, so a
# source change recompiles popgate only. The binary is copied out of the cache mount because the
# mount is not part of the image layer.
# `--profile dist --no-default-features`: the production binary, without the local authority
# (`popgate dev`'s emulator) and without debug info.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --no-default-features --locked --package popgate --bin popgate \
    && install -D -m 0755 target/dist/popgate /out/popgate

# Runtime stage: glibc + libgcc + CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/popgate /usr/local/bin/popgate
# The distroless "nonroot" user, numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 3128: the plain-HTTP proxy listener; 9901: the admin listener (/healthz, /readyz, /metrics).
# Both are whatever routes.yaml says; these are the values the examples use.
EXPOSE 3128 9901
# Distroless has no shell or curl, so the health check is popgate's own `probe` subcommand in
# exec form: one GET of the admin listener's /readyz (the admin address of the examples), exit 0
# on 2xx, 1 otherwise (the reason goes to `docker inspect`'s health log). Its own timeout is 2 s,
# under --timeout; --start-period covers the first token acquisitions (popgate waits up to 30 s
# for them). Kubernetes ignores HEALTHCHECK and uses the manifests' httpGet probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/popgate", "probe", "--url", "http://127.0.0.1:9901/readyz"]
ENTRYPOINT ["popgate"]
CMD ["run", "--config", "/etc/popgate/routes.yaml"]
