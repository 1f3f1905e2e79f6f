"""Reference agent runtime for Molecule workspaces.

A small, dependency-light A2A echo agent: it registers itself with the platform, heartbeats, and
answers ``message/send`` by echoing the text back. Fault modes (slow boot, never registering,
crashing, wedging, reporting errors) are switched on by environment variables, and more (A2A resets,
busy answers, slow, held or huge replies, capacity and capability claims) at run time by
`<WORKSPACE_CONFIG_PATH>/faults.json` (see :meth:`agent.main.Agent.fault_overrides`), so the platform's
supervision paths can be exercised end to end. Entry point: :func:`agent.main.run`.

This module stays import-light on purpose (``python -m agent.main`` must not find ``agent.main``
already imported); import the API from ``agent.main`` / ``agent.config``.
"""
