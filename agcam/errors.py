"""The user-error type and its exit code, at the bottom of the import graph (imports nothing of the
project), so the data sets, the store and the command-line helpers can all raise it."""

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user (a flag, a file, a data set): reported in one line, exit code 2."""
