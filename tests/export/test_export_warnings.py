"""An export prints nothing that asks for attention, without hiding warnings from anything else.

The issue saw torch's "0/1 specialized; Dim.AUTO was specified" note on every export. torch logs
it through its own "torch" logger (which does not propagate to the root logger), not the warnings
module. With the pinned torch, exporting the bundled architecture raises no warning and logs
nothing at WARNING, so there is nothing to silence; this keeps it that way, and proves that
warnings raised or logged after the export still surface.
"""

from __future__ import annotations

import logging
import warnings

import pytest

from export.export import to_onnx
from training.model import WithSoftmax, build_model


@pytest.mark.slow
def test_exporting_the_bundled_architecture_warns_about_nothing(caplog: pytest.LogCaptureFixture) -> None:
    model = WithSoftmax(build_model(2, dropout=0.2, arch="efficientnet_lite0")).eval()
    torch_log = logging.getLogger("torch")
    torch_log.addHandler(caplog.handler)  # torch's loggers stop at "torch": listen there too
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            to_onnx(model, image_size=32, opset=18)
            assert [str(warning.message) for warning in caught] == []
            assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
            warnings.warn("a real problem after the export", UserWarning, stacklevel=1)
            logging.getLogger("torch._export.non_strict_utils").warning("a real torch warning after the export")
    finally:
        torch_log.removeHandler(caplog.handler)
    assert [str(warning.message) for warning in caught] == ["a real problem after the export"]
    assert [record.getMessage() for record in caplog.records] == ["a real torch warning after the export"]
