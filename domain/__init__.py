"""Pure rules and models: no I/O. Workflows import only this package (plus temporalio)."""
