"""The release bar (params.yaml `release`): what a model must clear to carry the champion alias."""

from __future__ import annotations

from training.params import ReleaseParams

MIB = 2**20  # release.max_model_mb is in MiB, like the bundled-model test's byte limit


def release_failures(report: dict, model_bytes: int, served_format: str, bar: ReleaseParams) -> list[str]:
    """Why `report` (training.metrics.classification_report) misses the bar; empty when it clears it.

    `served_format` is models/metrics.json's `format`: fp32 when the quantize guard refused int8.
    """
    failures = []
    if served_format not in bar.formats:
        failures.append(f"format {served_format} not in release.formats {list(bar.formats)}")
    if report["accuracy"] < bar.min_accuracy:
        failures.append(f"accuracy {report['accuracy']:.4f} < release.min_accuracy {bar.min_accuracy}")
    for name, figures in report["per_class"].items():
        if figures["accuracy"] < bar.min_class_accuracy:
            failures.append(
                f"{name} accuracy {figures['accuracy']:.4f} < release.min_class_accuracy {bar.min_class_accuracy}"
            )
    if report["ece"] > bar.max_ece:
        failures.append(f"calibration error {report['ece']:.4f} > release.max_ece {bar.max_ece}")
    if model_bytes > bar.max_model_mb * MIB:
        failures.append(f"model {model_bytes / MIB:.2f} MiB > release.max_model_mb {bar.max_model_mb}")
    return failures
