"""The ``memetrm`` command line (typer + rich)."""
