"""The ``rjobs`` command: parsing and commands (main), output for people and scripts (render), the
worker command (worker), the guided tour (demo), the embedded server (server)."""

from rjobs.cli.main import main

__all__ = ["main"]
