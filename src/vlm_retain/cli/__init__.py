"""Thin typer commands, one module per group; all the work happens in the layers below."""
