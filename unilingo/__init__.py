"""Unilingo's shared domain: jobs, provider policy, limiter, breaker, keys and settings.

The API tier, the workers and the operator all import this package; none keeps a copy.
"""
