"""Every sample answer quoted in README.md and docs/ is what the bundled model gives for the photo it names.

A quoted figure (confidence, probabilities, an OIP output, a model version, a logged image's size
and hash) must follow, in the same code block, a mention of `deploy/samples/<cat|dog>.jpg` or that
photo's sha256 prefix, and must equal the bundled model's answer for it: 3 decimals where the doc
rounds, as many as it prints otherwise. The photos go through the service in-process, with every
setting at its default, as `make serve` serves them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.model import SessionTuning, load_model
from service.preprocessing import preprocess
from tests.helpers.paths import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PHOTOS = ("cat", "dog")
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


@dataclass(frozen=True)
class Answer:
    probabilities: dict[str, float]
    model_version: str
    oip_output: list[float]  # /v2 infer on the photo's pixels, normalised as GET /model says
    size: int
    sha256: str


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, Answer]]:
    with TestClient(create_app(Settings.from_env({}))) as client:
        spec = load_model(REPO / "models" / "model.onnx", SessionTuning()).metadata.preprocessing  # what /model says
        found = {}
        for photo in PHOTOS:
            data = (REPO / "deploy" / "samples" / f"{photo}.jpg").read_bytes()
            body = client.post("/predict", files={"file": (f"{photo}.jpg", data, "image/jpeg")}).json()
            tensor = preprocess(data, spec)
            request = {"inputs": [{"name": "image", "shape": list(tensor.shape), "datatype": "FP32"}]}
            request["inputs"][0]["data"] = tensor.ravel().tolist()
            oip = client.post("/v2/models/cats-dogs/infer", json=request).json()["outputs"][0]["data"]
            found[photo] = Answer(
                body["probabilities"], body["model_version"], oip, len(data), hashlib.sha256(data).hexdigest()
            )
        yield found


def _same(quoted: str, actual: float) -> bool:
    """`quoted` is `actual` to as many decimals as the doc printed."""
    places = len(quoted.split(".")[1]) if "." in quoted else 0
    return round(actual, places) == float(quoted)


@dataclass(frozen=True)
class Quote:
    doc: str
    line: str
    photo: str | None  # the sample photo the block named before this line


def _quotes(answers: dict[str, Answer]) -> list[Quote]:
    """Lines of fenced blocks that quote a model answer, with the photo named before them in their block."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", doc.read_text(), re.S | re.M):
            # A logged line names its photo by sha256 prefix, anywhere in its object.
            photo = next((name for name, answer in answers.items() if answer.sha256[:12] in block), None)
            for line in block.splitlines():
                named = re.search(r"deploy/samples/(cat|dog)\.jpg", line)
                photo = named[1] if named else photo
                if re.search(r'"(confidence|probabilities|model_version|image_bytes)":|"datatype":"FP32","data"', line):
                    found.append(Quote(doc.relative_to(REPO).as_posix(), line, photo))
    return found


def test_the_docs_quote_sample_answers_at_all(answers: dict[str, Answer]) -> None:
    docs = {quote.doc for quote in _quotes(answers)}
    assert {"README.md", "docs/service.md"} <= docs, docs


def test_every_quoted_answer_is_the_bundled_models_for_the_photo_it_names(answers: dict[str, Answer]) -> None:
    for quote in _quotes(answers):
        where = f"{quote.doc}: {quote.line.strip()}"
        assert quote.photo, f"a sample answer with no deploy/samples photo before it in its block: {where}"
        answer = answers[quote.photo]
        if confidence := re.search(rf'"confidence":{NUMBER}', quote.line):
            assert _same(confidence[1], max(answer.probabilities.values())), where
        for label, value in re.findall(rf'"(cat|dog)":{NUMBER}', quote.line):
            assert _same(value, answer.probabilities[label]), where
        if oip := re.search(rf'"data":\[{NUMBER},{NUMBER}\]', quote.line):
            assert _same(oip[1], answer.oip_output[0]) and _same(oip[2], answer.oip_output[1]), where
        if version := re.search(r'"model_version":"([0-9a-f]{12})"', quote.line):
            assert version[1] == answer.model_version, where
        if size := re.search(r'"image_bytes":([0-9]+)', quote.line):
            assert int(size[1]) == answer.size, where
        if sha := re.search(r'"image_sha256":"([0-9a-f]{12})"', quote.line):
            assert answer.sha256.startswith(sha[1]), where


def test_the_oip_path_agrees_with_predict_on_the_same_photo(answers: dict[str, Answer]) -> None:
    """So one quoted pair of figures stands for both paths in docs/service.md."""
    for answer in answers.values():
        expected = [answer.probabilities[label] for label in PHOTOS]
        assert np.allclose(answer.oip_output, expected, atol=1e-6)
