"""Real CalDAV servers from Debian packages, started on loopback as test fixtures.

Three servers, each started by the fixture as its own processes with its own configuration
and data (never a system service, never a file under ``/etc`` that the server writes):

- ``cyrus.start_cyrus(tmp)``: Cyrus IMAP 3 with its CalDAV module (``cyrus-imapd``,
  ``cyrus-caldav``), users in a private sasldb;
- ``davical.start_davical(tmp)``: DAViCal under its own Apache + mod_php, on a fresh
  PostgreSQL database;
- ``sogo.start_sogo(tmp)``: SOGo (``sogod``) with its own memcached, on a fresh PostgreSQL
  database with an SQL user source.

Each returns a :class:`~tests.debian_servers.common.DebianServer`, duck-typed on
``tests.servers.Server`` (``kind``, ``base_url``, ``username``, ``password``, ``process``,
``log_path``, ``make_calendar()``, ``request()``, ``stop()``), plus ``principal_url``,
``root_url`` and ``mail``: every message the server tried to send, captured by an aiosmtpd
sink that the fixture starts (nothing ever leaves the machine).

``install.sh`` installs the Debian packages (idempotent). PostgreSQL is expected on
``PGHOST``/``PGPORT`` (default 127.0.0.1:5432) with trust authentication for ``PGUSER``
(default ``postgres``).
"""
