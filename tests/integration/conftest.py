"""Integration tests use the session fixtures `stack` and `stack_settings` from tests/conftest.py."""
