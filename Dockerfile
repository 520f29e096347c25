# The agent's image: the release binary (the BPF objects are embedded in it) and the C libraries
# it links (glibc, libgcc_s), on an empty base. No shell and no package manager: nothing in the
# image needs one at run time.
#
#   docker build -t ghcr.io/imdsguard/imdsguard:0.1.0 .   compiles in the `build` stage below
#   scripts/image                                         no registry: reuses target/release/imdsguard
#
# scripts/image replaces the `build` stage with a build context of the same name holding
# out/imdsguard (`--build-context build=DIR`: Docker and podman both let a named context override
# a stage, which is then not built), so the binary the run already built goes in as it is.
#
# Build arguments:
#   VERSION, REVISION, CREATED   the OCI labels (scripts/image passes all three). VERSION's default
#             is the crate's version (crates/imdsguard/tests/deploy.rs keeps them one number).
#   RUST_IMAGE, BASE_IMAGE       the two base images; BASE_IMAGE provides only the C libraries.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# The release binary, compiled here (clang builds the BPF objects from bpf/ in build.rs), without
# its debug info.
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git stays out of the context: the commit `imdsguard version` prints comes from REVISION.
ARG REVISION=unknown
RUN IMDSGUARD_COMMIT="$(printf %.7s "$REVISION")" cargo build --release --locked -p imdsguard \
 && mkdir /out \
 && objcopy --strip-debug target/release/imdsguard /out/imdsguard

# The binary and the libraries ldd finds for it, at the paths ldd gives (the ELF interpreter
# included), gathered under /rootfs.
FROM ${BASE_IMAGE} AS rootfs
# scripts/image removes this stage's images by the label (they never reach the image).
LABEL io.imdsguard.stage=rootfs
COPY --from=build /out/imdsguard /rootfs/usr/local/bin/imdsguard
RUN set -eu; \
    libs="$(ldd /rootfs/usr/local/bin/imdsguard | grep -o '/[^ ]*')"; \
    for lib in $libs; do cp -L --parents "$lib" /rootfs; done; \
    chroot /rootfs /usr/local/bin/imdsguard version

FROM scratch
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/local/bin
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=
LABEL org.opencontainers.image.title="imdsguard" \
      org.opencontainers.image.description="Kubernetes node agent deciding which pods may reach the cloud instance metadata service: Cilium's policy CRDs enforced through eBPF, an L7 proxy and a Hubble API" \
      org.opencontainers.image.source="https://github.com/imdsguard/imdsguard" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# What the DaemonSet runs (crates/imdsguard-k8s/src/manifests.rs, deploy/helm/imdsguard): the
# agent with the Hubble API on :4244 and metrics on :9965. Any other subcommand replaces CMD,
# e.g. `podman run IMAGE version`.
ENTRYPOINT ["/usr/local/bin/imdsguard"]
CMD ["agent", "--hubble-listen-address", ":4244", "--hubble-metrics-server", ":9965"]
EXPOSE 4244 9965
