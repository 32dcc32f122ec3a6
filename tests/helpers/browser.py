"""Waiting on a real browser (tests/browser)."""

# Pages are slow to settle on a loaded 2-core box; no step here takes a second when idle.
WAIT_S = 60
