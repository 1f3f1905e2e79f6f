"""``python -m agent``: run the reference agent (same as ``molecule agent``)."""

from agent.main import run

run()
