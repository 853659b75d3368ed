"""Google Calendar API v3: the wire, credentials, push channels and the backend."""
