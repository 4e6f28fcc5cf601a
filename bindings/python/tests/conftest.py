"""Shared configuration of the braid pytest suite."""

pytest_plugins = ["pytester"]
