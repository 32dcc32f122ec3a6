"""Mistakes a user can fix, told apart from bugs: a stage prints one as a single `error:` line
(training/cli.py), never as a traceback. Each also is the built-in error it always was, so callers
that catch ValueError or FileNotFoundError still do."""

from __future__ import annotations


class UserError(Exception):
    """Its message names what to change."""


class ParamsError(UserError, ValueError):
    """A value in params.yaml that cannot work."""


class MissingInputError(UserError, FileNotFoundError):
    """A file an earlier stage writes is not there: the message names the stage to run."""
