"""The `logq` command."""
