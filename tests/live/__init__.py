"""Tests of desk/live.py: the desk on a real venue from its config (issue 6)."""
