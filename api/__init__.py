"""FastAPI app: thin routes (parse, authorise, call, reply)."""
