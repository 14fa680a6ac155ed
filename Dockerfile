# syntax=docker/dockerfile:1
# firstread in a container. The build stage makes the Debian package the way CI does
# (scripts/package-deb.sh: the release binary, libtorch carved from the PyPI wheels, the OHIF
# viewer from npm, cargo-deb); the runtime stage installs that .deb on debian:bookworm-slim, so
# the container runs the same files, paths and config as a packaged install.
#
#   docker build -t firstread:0.1.0 .
#   FIRSTREAD_DB_PASSWORD=... docker compose up -d      (docker-compose.yml: PostgreSQL + firstread)
#
# The build needs crates.io, PyPI (torch wheel, ~0.5 GB) and npm (@ohif/app) and takes a while on
# few cores (torch-sys' C++, the whole workspace in release mode).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM ${RUST_IMAGE} AS build
# The build tools of scripts/bootstrap.sh's apt list (its DICOM test peers, Orthanc and Chromium
# are for tests, not needed here).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang libclang-dev pkg-config patchelf python3-pip \
 && rm -rf /var/lib/apt/lists/*
# Node.js >= 20 for the bootstrap's viewer step (bookworm has 18)
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
WORKDIR /src
COPY . .
# bootstrap.sh (run by package-deb.sh): libtorch carve, viewer, cargo-deb; no apt, PostgreSQL or
# Python test peers
ENV FIRSTREAD_SKIP_APT=1 FIRSTREAD_SKIP_PG=1 FIRSTREAD_SKIP_PY=1 FIRSTREAD_CACHE=/cache
RUN --mount=type=cache,target=/cache \
    --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/package-deb.sh --out /out > /out.path \
 && mv "$(tail -n1 /out.path)" /out/firstread.deb

FROM debian:bookworm-slim
# the package brings the binary, libtorch (/usr/lib/firstread), the model and the viewer
# (/usr/share/firstread), the config (/etc/firstread) and the user firstread; curl is for the
# health check
COPY --from=build /out/firstread.deb /tmp/firstread.deb
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/firstread.deb curl \
 && rm -rf /var/lib/apt/lists/* /tmp/firstread.deb
# as the systemd unit sets them
ENV OMP_WAIT_POLICY=PASSIVE \
    NO_COLOR=1 \
    FIRSTREAD_CONFIG=/etc/firstread/firstread.toml
# the user the package made (a system uid chosen by adduser at install)
# hadolint ignore=DL3066
USER firstread
WORKDIR /var/lib/firstread
VOLUME ["/var/lib/firstread"]
# DICOM (Store SCP), HTTP (DICOMweb, viewer, triage, /healthz, /readyz, /metrics)
EXPOSE 11112 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/usr/bin/firstread"]
CMD ["--config", "/etc/firstread/firstread.toml", "serve"]
