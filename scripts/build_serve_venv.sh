#!/bin/sh
# Build the serving virtualenv: exactly requirements/serve.lock (pinned + hashed),
# no pip/setuptools inside, test suites stripped. Dockerfile.serve runs this in its
# builder stage; scripts/measure_envs.py runs it into a temp dir to measure the
# same environment without a Docker engine.
#   sh scripts/build_serve_venv.sh /opt/venv [python]
set -eu

VENV="${1:?usage: build_serve_venv.sh VENV_DIR [PYTHON]}"
PYTHON="${2:-python3}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"

"$PYTHON" -m venv --without-pip "$VENV"
# The base interpreter's pip installs into the venv (--python), so the venv itself
# never carries pip/setuptools. --no-deps + --require-hashes: the lock is the whole env.
"$PYTHON" -m pip --python "$VENV/bin/python" install \
    --no-cache-dir --disable-pip-version-check --no-deps --require-hashes \
    -r "$HERE/requirements/serve.lock"
"$PYTHON" -m pip --python "$VENV/bin/python" check --disable-pip-version-check
# Prune what is never loaded at run time (~40 MB; keeps the image under 300 MB):
# bundled test suites, the Swagger UI bundle's JavaScript source maps, type stubs,
# C headers, and onnxruntime's offline tooling (quantization, transformer
# optimisers, converters), which InferenceSession never imports.
# tests/ops/test_serve_env.py runs the service from exactly this venv.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
find "$SITE" -depth -type d -name tests -exec rm -rf {} +
find "$SITE" -type f \( -name '*.map' -o -name '*.pyi' -o -name '*.pxd' -o -name '*.h' \) -delete
rm -rf "$SITE/onnxruntime/quantization" "$SITE/onnxruntime/transformers" "$SITE/onnxruntime/tools"
# Fail the build if anything torch/onnx-training related slipped in.
if "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(0 if any(u.find_spec(m) for m in ('torch', 'torchvision', 'onnx')) else 1)"; then
    echo "build_serve_venv: torch/torchvision/onnx must not be in the serve env" >&2
    exit 1
fi
"$VENV/bin/python" -c "import onnxruntime, numpy, PIL, starlette, uvicorn, prometheus_client, multipart"
