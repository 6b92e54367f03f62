"""Subcommands of the atfr CLI: each has add_arguments(parser) and run(args) -> int."""
