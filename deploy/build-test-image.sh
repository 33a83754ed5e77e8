#!/bin/sh
# Build the tiny test image (edgefed/tiny:latest, also tagged myapp:latest for
# the seed example) from Debian's static busybox. No registry is involved.
#
# Idempotent: the image is labelled with a hash of its inputs; when an image
# with that label already exists, only the tags are (re)applied.
set -eu

BUSYBOX=${BUSYBOX:-/usr/bin/busybox}
TAGS="edgefed/tiny:latest myapp:latest"
HERE=$(cd "$(dirname "$0")" && pwd)
DOCKERFILE="$HERE/images/tiny/Dockerfile"
INDEX='<!doctype html><title>edgefed tiny</title><p>edgefed tiny image: busybox httpd</p>'

die() { echo "build-test-image: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found; install it with: apt-get install -y busybox-static"
# A dynamically linked busybox would not run in an empty image.
if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
    die "$BUSYBOX is not statically linked; install it with: apt-get install -y busybox-static"
fi

inputs=$( { sha256sum < "$BUSYBOX"; sha256sum < "$DOCKERFILE"; echo "$INDEX"; } | sha256sum | cut -c1-16)

current=$(docker image inspect --format '{{ index .Config.Labels "edgefed.tiny.inputs" }}' \
    edgefed/tiny:latest 2>/dev/null || true)
if [ "$current" != "$inputs" ]; then
    ctx=$(mktemp -d)
    trap 'rm -rf "$ctx"' EXIT
    mkdir -p "$ctx/bin" "$ctx/www"
    cp "$BUSYBOX" "$ctx/bin/busybox"
    ln -s busybox "$ctx/bin/sh"
    printf '%s\n' "$INDEX" > "$ctx/www/index.html"
    docker build --quiet --label "edgefed.tiny.inputs=$inputs" \
        -t edgefed/tiny:latest -f "$DOCKERFILE" "$ctx" >/dev/null
fi
for tag in $TAGS; do
    [ "$tag" = edgefed/tiny:latest ] || docker tag edgefed/tiny:latest "$tag"
done
echo "build-test-image: $TAGS ready ($inputs)"
