"""Runnable objectives for tuneyard studies (import them from the repository root)."""
