# syntax=docker/dockerfile:1
#
# sluice container image.
#
#   docker build -t sluice .
#
# Build stage: the toolchain the project is developed with (Rust 1.95 on
# Debian 12). Runtime stage: distroless cc (glibc + libgcc of the same Debian
# release, no shell, no package manager), running as the unprivileged
# "nonroot" user 65532.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crates.io downloads and the target directory
# between builds, so a source change recompiles only sluice itself; the binary
# is copied out because the cached target/ is not part of the image layer.
# --locked: build exactly the dependency versions of the committed Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice \
 && install -m 0755 target/release/sluice /usr/local/bin/sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/sluice /usr/local/bin/sluice
# A default configuration so that `docker run` works out of the box. On
# Kubernetes the ConfigMap is mounted over /etc/sluice and replaces it.
COPY config/container.toml /etc/sluice/sluice.toml
USER 65532:65532
# 3128: HTTP proxy (CONNECT and absolute-form); 9090: admin (/metrics, /healthz, /readyz).
EXPOSE 3128 9090
# No HEALTHCHECK: the image has no shell or HTTP client to run one, and on
# Kubernetes the kubelet's liveness/readiness probes on :9090 do that job.
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.toml"]
