"""CalDAV (RFC 4791, RFC 6578): the wire, the iCalendar translation and the backend."""
