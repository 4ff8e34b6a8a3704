#!/usr/bin/env bash
# What `make demo` (and `make test`) need, checked in seconds before the
# long steps start: Rust, a reachable Docker engine, debootstrap and root
# (unless the base image exists or BASE_IMAGE names another), and disk space
# for the trainer image. As root with apt-get, missing Debian packages are
# installed; otherwise it stops at once with the exact command to run.
#
#   images/prereqs.sh demo     what building the images and running a batch needs
#   images/prereqs.sh test     that, plus what `make test` needs (Chromium for the
#                              report's screenshot test, python3-venv for the MLflow
#                              server, iproute2 for the private-engine fault test)
#
# Env (set by the Makefile): BASE_TAG, IMAGE_TAG, BASE_IMAGE.
# Exit: 0 ready; 2 something is missing (each problem printed with its fix).
set -uo pipefail

purpose=${1:-demo}
base_tag=${BASE_TAG:-tb-base:bookworm}
image_tag=${IMAGE_TAG:-tb-trainer:latest}
base_image=${BASE_IMAGE:-}
# The trainer image is ~6 GB; extracting its layers needs headroom.
image_gib=8
# target/ after a release and a debug build with the tests.
build_gib=4

problems=()
packages=()
say() { printf 'prereqs: %s\n' "$*" >&2; }
# problem MESSAGE FIX
problem() { problems+=("$1"$'\n'"    run: $2"); }
need_package() { packages+=("$1"); }
is_root() { [[ $(id -u) -eq 0 ]]; }
can_apt() { is_root && command -v apt-get >/dev/null 2>&1; }
free_gib() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }

check_rust() {
    command -v cargo >/dev/null 2>&1 ||
        problem "cargo (Rust) is not installed" \
            "curl --proto '=https' -sSf https://sh.rustup.rs | sh   (then open a new shell)"
}

check_docker() {
    if ! command -v docker >/dev/null 2>&1; then
        if can_apt; then need_package docker.io; else
            problem "the docker command is not installed" "sudo apt-get install -y docker.io"
        fi
        return 1
    fi
    local out
    if ! out=$(timeout 15 docker version --format '{{.Server.APIVersion}}' 2>&1); then
        problem "the Docker engine is not reachable: $(grep -v "^[[:space:]]*$" <<<"$out" | tail -n1)" \
            "sudo systemctl start docker   (or: sudo dockerd &; a non-root user also needs: sudo usermod -aG docker \$USER)"
        return 1
    fi
    # API 1.41 (Docker 20.10) or newer.
    if [[ $(printf '%s\n1.41\n' "$out" | sort -V | head -n1) != 1.41 ]]; then
        problem "the Docker engine speaks API $out; tb needs 1.41 (Docker 20.10) or newer" \
            "upgrade Docker Engine: https://docs.docker.com/engine/install/"
    fi
}

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

check_base_image() {
    [[ -n $base_image ]] && return 0
    has_image "$base_tag" && return 0
    if ! command -v debootstrap >/dev/null 2>&1; then
        if can_apt; then need_package debootstrap; else
            problem "debootstrap is not installed (it builds $base_tag from Debian packages)" \
                "sudo apt-get install -y debootstrap   (or, with a registry: make demo BASE_IMAGE=python:3.11-slim)"
        fi
    fi
    is_root || problem "debootstrap needs root to build $base_tag" \
        "sudo make ${purpose}   (or, with a registry: make ${purpose} BASE_IMAGE=python:3.11-slim)"
}

check_disk() {
    if ! has_image "$image_tag"; then
        local root free
        root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null)
        free=$(free_gib "${root:-/var/lib/docker}")
        if [[ -n $free ]] && ((free < image_gib)); then
            problem "only $free GiB free under ${root:-/var/lib/docker}; the trainer image needs about $image_gib GiB" \
                "free space there (docker system prune removes unused images), or move Docker's data-root"
        fi
    fi
    if [[ ! -x target/release/tb ]]; then
        local free
        free=$(free_gib .)
        if [[ -n $free ]] && ((free < build_gib)); then
            problem "only $free GiB free under $(pwd); compiling tb needs about $build_gib GiB" \
                "free space there, or point CARGO_TARGET_DIR at a disk that has it"
        fi
    fi
}

check_test_tools() {
    # The report test renders report.html to a PNG.
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need_package chromium
    # The MLflow tests start a real server from a venv.
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_package python3-venv
    # The engine fault test runs a private engine in its own network namespace.
    command -v ip >/dev/null 2>&1 || need_package iproute2
}

install_packages() {
    ((${#packages[@]})) || return 0
    if ! can_apt; then
        problem "missing: ${packages[*]}" "sudo apt-get install -y ${packages[*]}"
        return
    fi
    say "installing ${packages[*]} with apt-get (about a minute)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null; }; then
        problem "apt-get could not install ${packages[*]}" "sudo apt-get install -y ${packages[*]}"
    fi
}

case $purpose in
demo | test) ;;
*) echo "usage: images/prereqs.sh demo|test" >&2; exit 2 ;;
esac

check_rust
if check_docker; then
    check_base_image
    check_disk
fi
[[ $purpose == test ]] && check_test_tools
# Problems first: nothing is installed when the run would stop anyway.
if ((${#problems[@]} == 0)); then
    install_packages
elif ((${#packages[@]})) && ! can_apt; then
    problem "missing: ${packages[*]}" "sudo apt-get install -y ${packages[*]}"
fi
if ((${#problems[@]})); then
    for p in "${problems[@]}"; do printf 'error: %s\n' "$p" >&2; done
    say "stopped before building anything; fix the above and run make $purpose again"
    exit 2
fi
say "ready for make $purpose"
