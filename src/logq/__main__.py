"""`python -m logq` is the `logq` command."""

from logq.cli.main import main

main()
