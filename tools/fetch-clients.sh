#!/bin/sh
# Fetch the real Debian XenStore clients into a private cache, without
# installing anything into the system (apt-get download + dpkg -x):
#   xenstore-utils   xenstore-read/-write/-ls/-list/-exists/-chmod/-rm/-watch
#   libxenstore4, libxentoolcore1   the libraries they load
#   xen-utils-4.17   /usr/lib/xen-4.17/bin/test-xenstore
#   xen-utils-common /etc/xen/oxenstored.conf (the config both daemons get)
#   python3-pyxs     the pure-Python client
# When the OCaml reference kit has already extracted all of these
# ($OCAML_REF_WORK/_deps/root, see ../shared/ocaml-ref/fetch-debs.sh), the
# cache is a symlink to it and nothing is downloaded.  Idempotent.
#
# Prints the root of the extracted tree on stdout.
# env: OXSD_CLIENTS     cache dir (default ~/.cache/oxsd-clients)
#      OCAML_REF_WORK   the reference kit's work dir (default ~/.cache/ocaml-ref)
#      XEN_DEB_VERSION  pin for the xen packages (default as the reference
#                       kit; falls back to apt's candidate)
set -eu
CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache}
CACHE=${OXSD_CLIENTS:-$CACHE_HOME/oxsd-clients}
REF_ROOT=${OCAML_REF_WORK:-$CACHE_HOME/ocaml-ref}/_deps/root
V=${XEN_DEB_VERSION:-4.17.7+13-g2445b30a44-0+deb12u1}
XEN_PKGS="xenstore-utils libxenstore4 libxentoolcore1 xen-utils-4.17 xen-utils-common"
OTHER_PKGS="python3-pyxs"

complete() {  # is every file the tests use under $1?
    for f in usr/bin/xenstore-read usr/bin/xenstore-ls usr/bin/xenstore-watch \
             usr/lib/xen-4.17/bin/test-xenstore etc/xen/oxenstored.conf \
             usr/lib/python3/dist-packages/pyxs/__init__.py; do
        [ -e "$1/$f" ] || return 1
    done
    ls "$1"/usr/lib/*/libxenstore.so.4 "$1"/usr/lib/*/libxentoolcore.so.1 >/dev/null 2>&1
}

if complete "$CACHE/root"; then echo "$CACHE/root"; exit 0; fi
mkdir -p "$CACHE"
if complete "$REF_ROOT" && { [ -L "$CACHE/root" ] || [ ! -e "$CACHE/root" ]; }; then
    ln -sfn "$REF_ROOT" "$CACHE/root"
    echo "$CACHE/root"
    exit 0
fi

[ -L "$CACHE/root" ] && rm -f "$CACHE/root"
mkdir -p "$CACHE/debs" "$CACHE/root"
cd "$CACHE/debs"
if ! apt-cache show xenstore-utils >/dev/null 2>&1; then
    apt-get update -qq >&2
fi
for p in $XEN_PKGS; do
    if ! ls "${p}"_*.deb >/dev/null 2>&1; then
        apt-get download -q "$p=$V" >&2 2>/dev/null || apt-get download -q "$p" >&2
    fi
done
for p in $OTHER_PKGS; do
    ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download -q "$p" >&2
done
for d in *.deb; do dpkg -x "$d" "$CACHE/root"; done
for d in *.deb; do dpkg-deb -f "$d" Package Version | tr '\n' ' '; echo; done > "$CACHE/versions.txt"
if ! complete "$CACHE/root"; then
    echo "fetch-clients: the extracted packages lack some client files" >&2
    exit 1
fi
echo "$CACHE/root"
