#!/usr/bin/env bash
# The unit tests on another Python than .venv's, in its own environment (.venv-<version>), e.g.
# `task test:unit:python -- 3.13`. The interpreter comes from PATH or from pyenv; nothing is
# downloaded but the shop's dependencies.
set -euo pipefail
version=${1:?usage: other-python.sh <version, e.g. 3.13> [pytest args]}
shift
cd "$(dirname "$0")/../.."
# A pyenv shim is on PATH for every version pyenv knows of, installed or not: try each candidate.
python=
for candidate in "python$version" "$(pyenv root 2>/dev/null)/versions/$version".*/bin/"python$version" \
    "$HOME/.pyenv/versions/$version".*/bin/"python$version"; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == tuple(map(int, sys.argv[1].split(".")))' \
      "$version" >/dev/null 2>&1; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "Python $version not found on PATH nor in pyenv: install it (e.g. pyenv install $version) and retry" >&2
  exit 1
fi
venv=.venv-$version
stamp=$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  started=$SECONDS
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e '.[dev]'
  rm -f "$venv"/.installed-* && touch "$stamp"
  echo "[test:unit:python] $venv ready in $((SECONDS - started))s"
fi
echo "[test:unit:python] $("$venv/bin/python" --version)"
exec "$venv/bin/python" -m pytest tests/unit "$@"
