"""Worker processes: register workflows and activities on the task queue."""
