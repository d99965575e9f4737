"""One exception family: every error a user can act on is a BenchboxError.

The CLI prints these as one message without a traceback and exits non-zero; anything else is a
bug and keeps its traceback.
"""


class BenchboxError(Exception):
    """An error with a message that names the file, field or plugin and says what to do.

    ``detail`` keeps what a user does not need to read but a bug report does (a plugin's
    traceback): the CLI writes it to the run's log and shows it with ``--verbose``."""

    def __init__(self, message: str = "", detail: str | None = None):
        super().__init__(message)
        self.detail = detail

    def __reduce__(self):  # picklable across processes (Ray), detail included
        return (type(self), (str(self), self.detail))


class SuiteError(BenchboxError):
    """A suite file is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, path, problems):
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: {len(self.problems)} problem(s)\n{lines}")

    def __reduce__(self):  # picklable across processes (Ray)
        return (SuiteError, (self.path, self.problems))


class PluginError(BenchboxError):
    """A plugin is missing, unavailable or misbehaving."""


class DataError(BenchboxError):
    """Input data is missing, incomplete or unreadable."""


class WeightsError(BenchboxError):
    """Requested weights cannot be found or loaded."""


class StoreError(BenchboxError):
    """A run directory is missing, foreign or damaged."""


def did_you_mean(name, choices) -> str:
    """' (did you mean X?)' for the closest of ``choices`` to a misspelt ``name``, else ''."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
