#!/bin/sh
# Entrypoint of Dockerfile.train: run the DVC pipeline on data mounted into the container.
#
#   DATA_SOURCE  archive or folder to train on (default /data/dogs-vs-cats-20k.zip);
#                written into this container's copy of params.yaml as data.source,
#                because `dvc exp run -S` needs a Git repository and the image has none.
#   OUTPUT_DIR   if set, model.onnx, metrics.json, best_model.pth, dvc.lock and
#                reports/ are copied there afterwards (a bind mount, e.g. ./models).
#   PARAMS       extra overrides, e.g. "train.epochs=2 train.max_train_images=500"
#   MLFLOW_TRACKING_URI  optional tracking server (http://mlflow:5000 in compose).
# Arguments are passed to `dvc repro` (e.g. `--dry`, a stage name, `--force`).
set -eu

cd "${APP_DIR:-/app}"
DATA_SOURCE="${DATA_SOURCE:-/data/dogs-vs-cats-20k.zip}"
if [ ! -e "$DATA_SOURCE" ] && [ "${DATA_SOURCE#http}" = "$DATA_SOURCE" ]; then
    echo "docker-train: DATA_SOURCE=$DATA_SOURCE does not exist; mount the data, e.g. -v \$PWD/../shared/data:/data:ro" >&2
    exit 2
fi

python - "$DATA_SOURCE" ${PARAMS:-} <<'PY'
import sys
import yaml

source, overrides = sys.argv[1], sys.argv[2:]
with open("params.yaml") as fh:
    params = yaml.safe_load(fh)
params["data"]["source"] = source
for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep:
        sys.exit(f"docker-train: PARAMS entry {item!r} is not key.path=value")
    node = params
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    if leaf not in node:
        sys.exit(f"docker-train: unknown parameter {key!r} (see params.yaml)")
    node[leaf] = yaml.safe_load(raw)
with open("params.yaml", "w") as fh:
    yaml.safe_dump(params, fh, sort_keys=False)
print(f"docker-train: data.source={source} {' '.join(overrides)}".rstrip())
PY

# The image carries no .git: tell DVC to work without an SCM.
dvc config --local core.no_scm true
dvc config --local core.analytics false
dvc repro "$@"

if [ -n "${OUTPUT_DIR:-}" ]; then
    mkdir -p "$OUTPUT_DIR"
    for f in models/model.onnx models/metrics.json models/best_model.pth dvc.lock; do
        if [ -e "$f" ]; then cp "$f" "$OUTPUT_DIR/"; fi
    done
    if [ -d reports ]; then cp -R reports "$OUTPUT_DIR/"; fi
    echo "docker-train: artifacts copied to $OUTPUT_DIR"
fi
