"""Stand-in base images, built locally because no registry can be reached from here.

Each is tagged like the image it replaces (python:3.11-slim, the compose file's Prometheus and
MLflow images) and labelled with a hash of everything it is built from, so a rerun reuses it
and a changed input rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from tests.containers.engine import Engine, privileged, require
from tests.helpers.paths import REPO

DOCKERFILES = Path(__file__).resolve().parent / "base_images"
LABEL = "catsdogs.standin.hash"
DEBIAN_IMAGE = "catsdogs-standin/debian:bookworm"
PYTHON_IMAGE = "python:3.11-slim"  # the default of Dockerfile.serve's and Dockerfile.train's ARG PYTHON_IMAGE
SUITE = "bookworm"
# deb.debian.org is what apt uses here; elsewhere point it at any Debian mirror.
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
CA_BUNDLE = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def current_hash(engine: Engine, tag: str) -> str:
    proc = engine.run("image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def compose_image(service: str) -> str:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][service]["image"]


def pinned(requirements: str, package: str) -> str:
    for line in (REPO / "requirements" / requirements).read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"requirements/{requirements} pins no {package}")


def build(engine: Engine, tag: str, dockerfile: str, inputs_hash: str, context: Path, **args: str) -> str:
    if current_hash(engine, tag) == inputs_hash:
        return tag
    build_args = [f"--build-arg={key}={value}" for key, value in args.items()]
    engine.run(
        "build", "--network=host", "--force-rm", f"--label={LABEL}={inputs_hash}", *build_args,
        f"--file={DOCKERFILES / dockerfile}", f"--tag={tag}", str(context),
        timeout=1800,
    )  # fmt: skip
    return tag


# As Debian's slim images do: no package lists, docs, man pages or translations, now or later.
SLIM = """cd "$1" \
&& rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb \
&& rm -rf usr/share/doc/* usr/share/man/* usr/share/locale/* \
&& printf 'path-exclude=/usr/share/%s/*\\n' doc man locale > etc/dpkg/dpkg.cfg.d/slim"""


def debian_hash() -> str:
    return digest("debootstrap --variant=minbase", SUITE, MIRROR, SLIM)


def ensure_debian(engine: Engine) -> str:
    """debootstrap's minbase, imported as an image (the FROM of the other stand-ins)."""
    wanted = debian_hash()
    if current_hash(engine, DEBIAN_IMAGE) == wanted:
        return DEBIAN_IMAGE
    debootstrap = require("debootstrap")
    rootfs = Path(tempfile.mkdtemp(prefix="catsdogs-rootfs-"))
    try:
        boot = subprocess.run(
            privileged([debootstrap, "--variant=minbase", SUITE, str(rootfs), MIRROR]),
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert boot.returncode == 0, f"debootstrap failed:\n{boot.stdout[-3000:]}\n{boot.stderr[-3000:]}"
        subprocess.run(privileged(["sh", "-c", SLIM, "slim", str(rootfs)]), check=True, timeout=120)
        tar = subprocess.Popen(privileged(["tar", "-C", str(rootfs), "-c", "."]), stdout=subprocess.PIPE)
        imported = subprocess.run(
            [engine.docker, "import", f"--change=LABEL {LABEL}={wanted}", "-", DEBIAN_IMAGE],
            stdin=tar.stdout,
            env=engine.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert tar.wait(timeout=60) == 0 and imported.returncode == 0, f"docker import failed: {imported.stderr}"
    finally:
        subprocess.run(privileged(["rm", "-rf", str(rootfs)]), check=False)
    return DEBIAN_IMAGE


def python_hash() -> str:
    return digest(debian_hash(), (DOCKERFILES / "python.Dockerfile").read_bytes(), CA_BUNDLE.read_bytes())


def ensure_python(engine: Engine) -> str:
    """python:3.11-slim: Debian's Python 3.11, pip trusting this host's certificate store."""
    debian = ensure_debian(engine)
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(CA_BUNDLE, Path(context) / "ca-certificates.crt")
        return build(engine, PYTHON_IMAGE, "python.Dockerfile", python_hash(), Path(context), DEBIAN_IMAGE=debian)


def ensure_prometheus(engine: Engine) -> str:
    """Tagged as the compose file's Prometheus image; Debian's prometheus package inside."""
    debian = ensure_debian(engine)
    inputs = digest(debian_hash(), (DOCKERFILES / "prometheus.Dockerfile").read_bytes())
    with tempfile.TemporaryDirectory() as context:
        return build(
            engine, compose_image("prometheus"), "prometheus.Dockerfile", inputs, Path(context), DEBIAN_IMAGE=debian
        )


def ensure_mlflow(engine: Engine) -> str:
    """Tagged as the compose file's MLflow image; the mlflow requirements/train.txt pins inside."""
    python = ensure_python(engine)
    version = pinned("train.txt", "mlflow")
    inputs = digest(python_hash(), (DOCKERFILES / "mlflow.Dockerfile").read_bytes(), version)
    with tempfile.TemporaryDirectory() as context:
        return build(
            engine, compose_image("mlflow"), "mlflow.Dockerfile", inputs, Path(context),
            PYTHON_IMAGE=python, MLFLOW_VERSION=version,
        )  # fmt: skip
