"""What tests share. Test modules import helpers from here, never from another test module or a conftest
(tests/test_test_imports.py holds that). A helper only one folder needs may sit beside its tests as a
plain module (tests/training/builders.py, tests/containers/engine.py).

- paths: the repository root, the shared photo archives, reading YAML
- network: a free port, an HTTP status probe, waiting for a server's 200
- commands: subprocesses in this venv's environment, a copy of the working tree, tools on PATH
- pipeline: the tiny DVC pipeline parameters, and each stage's command, module and paths from dvc.yaml
- service_process: a real `python -m service` process, and a prediction sent to it
- images: test images and their encodings, a slow batch upload
- onnx_models: tiny ONNX models that honour the service's contract, swapped in as a deploy would
- service_app: the in-process app's settings and its upload-limit middleware
- v2_requests: KServe v2 / Triton request bodies
- prometheus: reading metrics, PromQL and the alert rules
- browser: how long a real browser may take
"""
