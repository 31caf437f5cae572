# syntax=docker/dockerfile:1
# One image for every Portico component: `portico controller|speaker|ingress`.
# The ingress tier runs HAProxy (Debian's package) inside this same image; the speaker runs
# exabgp (a Python dependency of the project) as its BGP process and FRR's bfdd (Debian's
# package) for BFD.
#
#   docker build -t portico:0.1.0 .
#
# Without a Docker engine (Debian 12, root): scripts/build-image.sh builds this file with
# buildah on a debootstrap stand-in for PYTHON_IMAGE and checks the entry points.
#
# Stage 1 builds a wheel of the project and of all its dependencies, so the runtime stage
# needs no compiler, no pip cache and no source tree.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY portico/ portico/
COPY common/ common/
COPY lb/ lb/
COPY speaker/ speaker/
COPY ingress/ ingress/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG HAPROXY_VERSION=2.6.*
ARG FRR_VERSION=8.4.*
# haproxy: the ingress data plane. iproute2: the speaker's node-side address handling.
# tini: PID 1 that forwards SIGTERM (graceful BGP withdraw / HAProxy hand-over) and reaps
# HAProxy's, exabgp's and bfdd's children.
# frr: the speaker runs its bfdd beside exabgp for BGPPeers with spec.bfd (and vtysh to read
# it). Debian ships every FRR daemon in this one package; dpkg leaves out all the others and
# the plugin modules (path-exclude, as the slim images do for docs), so the image holds only
# bfdd, vtysh, libfrr and the YANG models bfdd loads. Running it needs the chart's
# speaker.bfd.enabled (capabilities: docs/speaker.md "BFD").
RUN printf '%s\n' 'path-exclude /usr/lib/frr/*' 'path-include /usr/lib/frr/bfdd' \
        'path-exclude /usr/lib/*/frr/modules/*' 'path-exclude /usr/bin/mtracebis' \
        > /etc/dpkg/dpkg.cfg.d/portico-frr-bfdd-only \
    && apt-get update \
    && apt-get install -y --no-install-recommends "haproxy=${HAPROXY_VERSION}" iproute2=6.1.* \
       tini=0.19.* "frr=${FRR_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels portico-lb \
    && portico --help >/dev/null 2>&1
# The UID/GID match the chart's securityContext (runAsUser: 10001), so the kubelet can verify
# runAsNonRoot without reading /etc/passwd. The speaker alone runs as UID 0 with only the
# capabilities charts/portico/templates/speaker.yaml lists and explains.
RUN groupadd --system --gid 10001 portico \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin portico \
    && install -d -o 10001 -g 10001 -m 0750 /var/run/portico-ingress
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 7472 7473 8080 8443 10254
ENTRYPOINT ["/usr/bin/tini", "--", "portico"]
CMD ["--help"]
