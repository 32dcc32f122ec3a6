"""docs/operations.md explains every panel of the Grafana dashboard: what normal looks like and
what to do when it isn't, under a heading named exactly as the panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.helpers.paths import REPO

DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "catsdogs.json"
SECTION = "## Dashboard panels"


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_titles() -> tuple[list[str], list[str]]:
    """(row titles, panel titles) in dashboard order."""
    every = list(panels(json.loads(DASHBOARD.read_text())["panels"]))
    rows = [p["title"] for p in every if p["type"] == "row"]
    return rows, [p["title"] for p in every if p["type"] != "row"]


def documented() -> tuple[list[str], dict[str, str]]:
    """(### headings, {#### heading: its text}) of the dashboard section of docs/operations.md."""
    text = (REPO / "docs" / "operations.md").read_text()
    assert SECTION in text, f"docs/operations.md has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^### (.+)$", section, flags=re.M)
    parts = re.split(r"^#### (.+)$", section, flags=re.M)
    entries = dict(zip(parts[1::2], parts[2::2], strict=True))
    return rows, entries


def test_every_dashboard_panel_has_an_entry_in_operations_md() -> None:
    rows, titles = dashboard_titles()
    doc_rows, entries = documented()
    assert titles, "the dashboard has no panels"
    assert [t for t in titles if t not in entries] == []
    assert [r for r in rows if r not in doc_rows] == []


def test_each_entry_says_what_normal_is_and_what_to_do_otherwise() -> None:
    _, entries = documented()
    lacking = [title for title, body in entries.items() if "**Normal:**" not in body or "**Otherwise:**" not in body]
    assert lacking == []


def test_operations_md_documents_no_panel_the_dashboard_lacks() -> None:
    rows, titles = dashboard_titles()
    doc_rows, entries = documented()
    assert [e for e in entries if e not in titles] == []
    assert [r for r in doc_rows if r not in rows] == []


def test_dashboard_entries_link_to_alert_runbooks_that_exist() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}
    _, entries = documented()
    links = {link for body in entries.values() for link in re.findall(r"\]\(#([^)]+)\)", body)}
    assert links and links <= anchors, sorted(links - anchors)
