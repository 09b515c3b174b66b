"""Exit statuses of the `gptbert` command (documented in README "Command line")."""

OK = 0
USER_ERROR = 2  # bad input, named in one line on stderr
NO_SPACE = 74  # a disk or file-size limit filled up while writing (EX_IOERR); earlier outputs are intact
STOPPED = 75  # stopped early by SIGTERM / a first Ctrl-C after saving a checkpoint: resume to continue (EX_TEMPFAIL)
ABORTED = 130  # a second Ctrl-C (or an interrupt outside training): stopped at once, nothing saved
