"""Agent-to-agent traffic shared by the API proxy and the worker: address checks after DNS
resolution, the streaming dispatcher, and the forward-or-queue logic."""
