"""The composition root: config loading, the CLI, the daemon, the backend registry.

The only package that imports ``adapters`` or picks one by name; nothing below it does.
"""
