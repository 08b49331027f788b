"""Shared pytest setup: the Triton interpreter must be switched on before any kernel module is imported."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
