"""`python -m labeler.cli`: the `labeler` command."""

from labeler.cli import main

main()
