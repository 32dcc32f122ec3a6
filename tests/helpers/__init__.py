"""What tests share. Test modules import helpers from here, never from another test module or a conftest.

- paths: the repository root and the shared photo archives
- network: a free port, an HTTP status probe
- commands: subprocesses in this venv's environment, a copy of the working tree, tools on PATH
- pipeline: the tiny DVC pipeline parameters
- service_process: a real `python -m service` process
- images: test images and their encodings
- onnx_models: tiny ONNX models that honour the service's contract
- service_app: the in-process app's settings and its upload-limit middleware
- v2_requests: KServe v2 / Triton request bodies
- prometheus: reading metrics, PromQL and the alert rules
"""
