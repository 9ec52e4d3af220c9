"""The command line: options and clean exits shared by every script (:mod:`agcam.cli.common`),
and ``explain`` (:mod:`agcam.cli.explain`); the ``agcam`` command with every subcommand is
:mod:`agcam.__main__`."""
