#!/usr/bin/env bash
# Create .venv with vaelab and its dependencies. Reuses an installed PyTorch; otherwise installs
# torch==2.13.0 (on machines with a local CPU wheel, pip takes it from disk instead of a CUDA download).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${VAELAB_TORCH:-torch==2.13.0}
EXTRAS=${VAELAB_EXTRAS:-test}  # CI: test,ray,tensorboard,notebook,docs

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vaelab, torch, sklearn, safetensors, pytest" 2>/dev/null \
   && [ "$VENV/.stamp" -nt pyproject.toml ] && [ "$(cat "$VENV/.stamp")" = "$EXTRAS" ]; then
  exit 0  # already set up and up to date
fi

"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "vaelab needs Python >= 3.11"'
if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: reusing the PyTorch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  [ -d "$VENV" ] || "$PY" -m venv --system-site-packages "$VENV"
else
  [ -d "$VENV" ] || "$PY" -m venv "$VENV"
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_SPEC" 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" || true
    "$VENV/bin/python" -c "import torch" || { echo "setup: installing $TORCH_SPEC failed" >&2; exit 1; }
  fi
fi
echo "setup: installing vaelab and its dependencies into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" -c "import vaelab, torch, sklearn, safetensors, pytest" \
  || { echo "setup: the installation failed" >&2; exit 1; }
# each extra asked for must import: else its tests would quietly skip (and this stamp would keep them so)
declare -A EXTRA_MODULES=([ray]=ray [tensorboard]=tensorboard [notebook]="nbclient, nbformat, ipykernel" [docs]=mkdocs)
for extra in ${EXTRAS//,/ }; do
  mods=${EXTRA_MODULES[$extra]:-}
  [ -z "$mods" ] || "$VENV/bin/python" -c "import $mods" \
    || { echo "setup: the extra '$extra' did not install ($mods cannot be imported)" >&2; exit 1; }
done
echo "$EXTRAS" > "$VENV/.stamp"  # which extras it holds: another set reinstalls
