"""One exception type for every user-facing failure: the CLI prints its message and exits."""


class VaelabError(Exception):
    """A problem the user can fix (bad input, missing file, impossible option); no traceback shown."""

    exit_code = 2


class DataError(VaelabError):
    """Dataset files missing, corrupt or unverifiable."""

    exit_code = 3


class RunError(VaelabError):
    """A run folder that is missing, foreign, corrupt or inconsistent with its config."""

    exit_code = 4


class TrainingDiverged(VaelabError):
    """The loss or a gradient became NaN or Inf; the last good checkpoint is kept."""

    exit_code = 5


class WriteFailed(VaelabError):
    """A file could not be written (disk full, read-only folder, I/O error); the previous version is intact."""

    exit_code = 6


class RanksFailed(VaelabError):
    """A process of a DDP run failed (it printed why); the command exits with that process's code."""

    def __init__(self, code: int):
        super().__init__(f"a process of the DDP run exited with code {code}; continue it with --resume")
        self.exit_code = code
