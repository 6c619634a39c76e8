"""Helpers for the integration tests: the reference kit, the real Debian
clients, ring guests for the differential harness."""
