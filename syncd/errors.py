"""The one error tree of syncd.

Every expected failure is a :class:`SyncdError`; the CLI maps each kind to one sentence
and an exit code (see INTERFACE.md): 1 refused by a rule, 2 usage, 3 not found,
4 a peer unreachable, 78 bad configuration.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd expects; ``str(err)`` is the sentence shown to a person."""

    exit_code = 1


class Refused(SyncdError):
    """A rule refused the action (a cut-off, an overlap, a state that does not allow it)."""

    exit_code = 1


class UsageError(SyncdError):
    """The command line or request was malformed (a time without an offset, a bad id)."""

    exit_code = 2


class NotFoundError(SyncdError):
    """The named session, admin, calendar or outbox row does not exist."""

    exit_code = 3


class PeerUnavailable(SyncdError):
    """A peer (calendar server, SMTP server, database) could not be reached."""

    exit_code = 4


class ConfigError(SyncdError):
    """The configuration file is missing, malformed or names something invalid."""

    exit_code = 78
