"""Notifications: the outbox writer, email composition and the sender loop."""
