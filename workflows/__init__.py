"""Temporal workflows. They import only `domain` (pure) and temporalio."""
