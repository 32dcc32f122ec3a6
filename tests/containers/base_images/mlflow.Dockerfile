# Stand-in for ghcr.io/mlflow/mlflow where no registry can be reached: the
# project's pinned mlflow in a venv on the local python base.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
ARG MLFLOW_VERSION
ENV PATH=/opt/mlflow/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mlflow \
    && pip install "mlflow==${MLFLOW_VERSION}"
