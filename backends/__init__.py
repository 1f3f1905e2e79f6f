"""Provisioners: one protocol, implementations chosen by configuration (template > workspace > default)."""
