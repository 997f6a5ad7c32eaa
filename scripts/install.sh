#!/usr/bin/env bash
# Installs the project into ./.venv: system GL libraries for headless MuJoCo rendering (Debian /
# Ubuntu, via apt-get when run as root or with sudo), then the Python packages pinned by
# constraints.txt (CPU torch on a CPU machine, mujoco 3.3.0 for dm_control + Meta-World).
#   bash scripts/install.sh        # runtime only
#   bash scripts/install.sh test   # plus the test extras
set -euo pipefail
cd "$(dirname "$0")/.."

gl_packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6)
missing=()
if command -v dpkg >/dev/null; then
  for p in "${gl_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing system GL packages: ${missing[*]}"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null; then
    echo "WARNING: could not install ${missing[*]}; headless rendering needs EGL or OSMesa (see README)" >&2
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
extras=""; [ "${1:-}" = "test" ] && extras="[test]"
pip_install() {  # quiet, minus the notices about optional local index folders that do not exist
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt "$@" \
    2> >(grep -v "is ignored: it is neither" >&2)
}
# torch first and alone: with it pinned and present, nothing else can pull a CUDA build.
pip_install "torch==2.13.0"
pip_install -e ".${extras}"
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
.venv/bin/python -c "import torch, dm_control, metaworld, faiss, hydra; print('installed: torch', torch.__version__)"
