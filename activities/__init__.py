"""Everything with side effects that a workflow calls. All activities are idempotent."""
