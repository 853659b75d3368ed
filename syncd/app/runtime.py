"""What every command handler gets: the parsed arguments, and config and database on demand.

Nothing heavy is imported here (issue 11, start-up): the configuration (pydantic) and the
database (SQLAlchemy) are imported the first time a handler asks for them.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd import config as config_mod
    from syncd.store.context import Context


class Runtime:
    """Lazily built shared objects for one command: config, database, service context."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: config_mod.Config | None = None
        self._ctx: Context | None = None

    @property
    def config(self) -> config_mod.Config:
        """The validated configuration, loaded on first use."""
        if self._config is None:
            from syncd import config as config_mod

            self._config = config_mod.load(self.args.config)
        return self._config

    @property
    def ctx(self) -> Context:
        """The service context (database, policy, public URL), built on first use."""
        if self._ctx is None:
            from syncd.errors import ConfigError
            from syncd.store.context import Context
            from syncd.store.db import Database

            cfg = self.config
            db = Database(cfg.database.url)
            if self.args.command not in ("db", "init", "demo") and not db.is_current():
                where = f" --config {self.args.config}" if self.args.config else ""
                raise ConfigError(
                    f"The database {cfg.database.url} has no schema yet: "
                    f"run 'syncd{where} db upgrade'."
                )
            state_dir = cfg.sync.state_dir
            self._ctx = Context(
                db=db,
                public_url=cfg.web.public_url,
                policy=cfg.policy.to_policy(),
                link_key=functools.cache(lambda: cfg.web.link_secret(state_dir)),
                rest_api=bool(cfg.web.api_token_file or cfg.web.admin_token_file),
            )
        return self._ctx


def emit(args: argparse.Namespace, data: Any, text: str | Sequence[str]) -> None:
    """``data`` as JSON with ``--json``, else ``text`` for a person."""
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text if isinstance(text, str) else "\n".join(text))
