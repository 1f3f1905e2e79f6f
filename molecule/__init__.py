"""Molecule's front door: the CLI, `molecule up`, the embedded Temporal and PostgreSQL launchers and
the agent image."""
