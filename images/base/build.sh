#!/usr/bin/env bash
# Builds the base image tb's trainer image starts from, out of Debian packages
# alone, for hosts that reach no container registry (air-gapped sites too).
#
#   images/base/build.sh [TAG]          default TAG: tb-base:bookworm
#
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), SUITE (bookworm),
#      CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt), FORCE=1 rebuilds.
set -euo pipefail

tag=${1:-tb-base:bookworm}
suite=${SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if [[ -z ${FORCE:-} ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag already present (FORCE=1 rebuilds it)" >&2
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "error: debootstrap is not installed" >&2
    echo "hint: apt-get install debootstrap (or build FROM a registry image: make image BASE_IMAGE=python:3.11-slim)" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "error: debootstrap needs root to build $tag" >&2
    echo "hint: sudo make base-image" >&2
    exit 2
fi
if [[ ! -r $ca_bundle ]]; then
    echo "error: CA bundle $ca_bundle not readable" >&2
    echo "hint: set CA_BUNDLE to your host's PEM bundle" >&2
    exit 2
fi

root=$(mktemp -d "${TMPDIR:-/var/tmp}/tb-base.XXXXXX")
trap 'rm -rf "$root"' EXIT

echo "debootstrap $suite from $mirror into $root" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >&2

# The host's bundle carries whatever CA the site's TLS proxy needs; the image
# must trust exactly what the host trusts to reach the package registries.
install -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*

tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' \
    - "$tag" >/dev/null
echo "built $tag" >&2
