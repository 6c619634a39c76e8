#!/bin/sh
# A PyPy runtime for oxsd: Debian's pypy3 (7.3.11, Python 3.9) and a venv
# holding oxsd's dependencies and test needs, read from setup.cfg
# (install_requires + the `test` extra; oxsd itself is not installed there:
# run it from a checkout with PYTHONPATH, or `pip install .` into the venv).
# Installs pypy3 and pypy3-venv with apt-get when missing (needs root).
# Idempotent: pip runs again only when the requirement list changed.
#
# Prints the venv's interpreter on stdout (e.g. for bench --python, XENSTORED).
# env: OXSD_PYPY_VENV   the venv (default ~/.cache/oxsd-pypy)
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
VENV=${OXSD_PYPY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxsd-pypy}

if ! command -v pypy3 >/dev/null 2>&1 || ! pypy3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup-pypy: pypy3 (and pypy3-venv) missing, and installing them needs root" >&2
        exit 1
    fi
    apt-cache show pypy3-venv >/dev/null 2>&1 || apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pypy3 pypy3-venv >&2
fi

REQS=$(pypy3 - "$HERE/setup.cfg" <<'PY'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
lines = (cfg["options"]["install_requires"].splitlines()
         + cfg["options.extras_require"]["test"].splitlines())
print(" ".join(line.strip() for line in lines if line.strip()))
PY
)
STAMP=$VENV/.oxsd-requirements
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$REQS" ]; then
    [ -x "$VENV/bin/python" ] || pypy3 -m venv "$VENV" >&2
    # shellcheck disable=SC2086 # one argument per requirement
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check $REQS >&2
    echo "$REQS" > "$STAMP"
fi
echo "$VENV/bin/python"
