"""Helpers the test tiers share (not tests): apps, real API processes, tokens, receivers."""
