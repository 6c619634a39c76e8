#!/bin/sh
# Fetch the real Debian XenStore clients into a private cache, without
# installing anything into the system (dpkg -x):
#   xenstore-utils   xenstore-read/-write/-ls/-list/-exists/-chmod/-rm/-watch
#   libxenstore4, libxentoolcore1   the libraries they load
#   xen-utils-4.17   /usr/lib/xen-4.17/bin/test-xenstore, xenstore-control
#   xen-utils-common /etc/xen/oxenstored.conf (the config both daemons get)
#   python3-pyxs     the pure-Python client
# Always the pinned version, the reference's (4.17.7+13), never another:
#   1. with the OCaml reference kit (../shared/ocaml-ref, or $OCAML_REF), its
#      fetch-debs.sh extracts them from the packages it ships in debs/ into
#      $OCAML_REF_WORK/_deps/root, and the cache is a symlink to that tree;
#   2. without it, `apt-get download PKG=VERSION` at exactly the pin.
# A cache holding another version is rebuilt.  Idempotent.
#
# Prints the root of the extracted tree on stdout.
# env: OXSD_CLIENTS     cache dir (default ~/.cache/oxsd-clients)
#      OCAML_REF        the reference kit (default: ../shared/ocaml-ref beside the repo)
#      OCAML_REF_WORK   the reference kit's work dir (default ~/.cache/ocaml-ref)
#      XEN_DEB_VERSION  the pin (default 4.17.7+13-g2445b30a44-0+deb12u1)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache}
CACHE=${OXSD_CLIENTS:-$CACHE_HOME/oxsd-clients}
KIT=${OCAML_REF:-$HERE/../../shared/ocaml-ref}
REF_ROOT=${OCAML_REF_WORK:-$CACHE_HOME/ocaml-ref}/_deps/root
V=${XEN_DEB_VERSION:-4.17.7+13-g2445b30a44-0+deb12u1}
PYXS_V=0.4.2~git20190115.97f14313-5
XEN_PKGS="xenstore-utils libxenstore4 libxentoolcore1 xen-utils-4.17 xen-utils-common"
PIN="$V python3-pyxs=$PYXS_V"

complete() {  # is every file the tests use under $1?
    for f in usr/bin/xenstore-read usr/bin/xenstore-ls usr/bin/xenstore-watch \
             usr/lib/xen-4.17/bin/test-xenstore usr/lib/xen-4.17/bin/xenstore-control \
             etc/xen/oxenstored.conf usr/lib/python3/dist-packages/pyxs/__init__.py; do
        [ -e "$1/$f" ] || return 1
    done
    ls "$1"/usr/lib/*/libxenstore.so.4 "$1"/usr/lib/*/libxentoolcore.so.1 >/dev/null 2>&1
}

pinned() {  # does the tree $1 hold the pinned packages?
    { [ -f "$1/.done" ] && grep -qF "$V " "$1/.done"; } ||
        { [ -f "$1/.pin" ] && [ "$(cat "$1/.pin")" = "$PIN" ]; }
}

if complete "$CACHE/root" && pinned "$CACHE/root"; then echo "$CACHE/root"; exit 0; fi
mkdir -p "$CACHE"

if [ -x "$KIT/fetch-debs.sh" ]; then
    XEN_DEB_VERSION=$V "$KIT/fetch-debs.sh" >&2
    if complete "$REF_ROOT" && pinned "$REF_ROOT"; then
        rm -rf "$CACHE/root" "$CACHE/debs"
        ln -sfn "$REF_ROOT" "$CACHE/root"
        echo "$CACHE/root"
        exit 0
    fi
    echo "fetch-clients: $KIT/fetch-debs.sh did not give the pinned clients" >&2
    exit 1
fi

rm -rf "$CACHE/root" "$CACHE/debs"
mkdir -p "$CACHE/debs" "$CACHE/root"
cd "$CACHE/debs"
get() {  # get PACKAGE VERSION: exactly that version, or fail
    apt-get download -q "$1=$2" >&2 && return 0
    apt-get update -qq >&2 || true
    apt-get download -q "$1=$2" >&2 && return 0
    echo "fetch-clients: cannot get $1=$2 (the pinned version) from the archive" >&2
    return 1
}
for p in $XEN_PKGS; do get "$p" "$V"; done
get python3-pyxs "$PYXS_V"
for d in *.deb; do dpkg -x "$d" "$CACHE/root"; done
for d in *.deb; do dpkg-deb -f "$d" Package Version | tr '\n' ' '; echo; done > "$CACHE/versions.txt"
if ! complete "$CACHE/root"; then
    echo "fetch-clients: the extracted packages lack some client files" >&2
    exit 1
fi
echo "$PIN" > "$CACHE/root/.pin"
echo "$CACHE/root"
