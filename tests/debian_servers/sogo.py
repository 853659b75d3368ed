"""SOGo (Debian ``sogo``) with its own memcached, on a fresh PostgreSQL database.

- ``sogod -WOUseWatchDog NO -WONoDetach YES`` runs as the ``sogo`` user (it refuses root)
  and serves DAV itself on ``127.0.0.1:PORT`` (no Apache in front).
- Settings: GNUstep keeps one file per defaults domain; ``GNUSTEP_CONFIG_FILE`` points at
  our copy of GNUstep.conf whose ``GNUSTEP_USER_DEFAULTS_DIR`` is the runtime folder, where
  ``sogod.plist`` holds every setting. sogod also reads ``/etc/sogo/sogo.conf`` (the path is
  compiled in and it aborts when that file is unreadable), but user defaults take precedence
  over it, so every key that file sets is set here too.
- Database: ``sogo_test_<random>``, dropped at stop; the user source is the table
  ``sogo_users (c_uid, c_name, c_password, c_cn, mail)``, plain passwords; sogod creates its
  profile/folder/store/acl/cache/session tables itself on first start.
- Mail: ``SOGoMailingMechanism = smtp`` to the sink. Appointment notifications are on
  (``SOGoAppointmentSendEMailNotifications = YES``, as in Debian's sogo.conf), so any
  invitation or notification SOGo sends is captured.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg

from tests.debian_servers.common import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    DebianServer,
    chown_tree,
    free_port,
    fresh_database,
    http_status,
    log_file,
    poke,
    runtime_dir,
    spawn,
    wait_until_up,
)
from tests.debian_servers.mailsink import MailSink

SOGOD = "/usr/sbin/sogod"
MEMCACHED = "/usr/bin/memcached"
GNUSTEP_CONF = Path("/etc/GNUstep/GNUstep.conf")
MAIL_DOMAIN = "example.test"

SOGOD_PLIST = """{{
  WOPort = "127.0.0.1:{port}";
  WOWorkersCount = 1;
  WOLogFile = "-";
  WOPidFile = "{root}/sogod.pid";
  SOGoProfileURL = "{pg}/sogo_user_profile";
  OCSFolderInfoURL = "{pg}/sogo_folder_info";
  OCSSessionsFolderURL = "{pg}/sogo_sessions_folder";
  OCSEMailAlarmsFolderURL = "{pg}/sogo_alarms_folder";
  OCSStoreURL = "{pg}/sogo_store";
  OCSAclURL = "{pg}/sogo_acl";
  OCSCacheFolderURL = "{pg}/sogo_cache_folder";
  SOGoUserSources = (
    {{
      type = sql;
      id = users;
      viewURL = "{pg}/sogo_users";
      canAuthenticate = YES;
      isAddressBook = NO;
      userPasswordAlgorithm = plain;
    }}
  );
  SOGoMailingMechanism = smtp;
  SOGoSMTPServer = "smtp://127.0.0.1:{smtp_port}";
  SOGoMailDomain = "{mail_domain}";
  SOGoMemcachedHost = "127.0.0.1:{memcached_port}";
  SOGoAppointmentSendEMailNotifications = {notify};
  SOGoFoldersSendEMailNotifications = NO;
  SOGoACLsSendEMailNotifications = NO;
  SOGoEnableEMailAlarms = NO;
  SOGoTimeZone = UTC;
  SOGoLanguage = English;
  SOGoIMAPServer = "imap://127.0.0.1:1";
  SOGoSieveServer = "sieve://127.0.0.1:1";
  SOGoSentFolderName = Sent;
  SOGoTrashFolderName = Trash;
  SOGoDraftsFolderName = Drafts;
  SOGoVacationEnabled = NO;
  SOGoForwardEnabled = NO;
  SOGoSieveScriptsEnabled = NO;
  SOGoFirstDayOfWeek = 0;
  SOGoMailMessageCheck = manually;
  SOGoMailAuxiliaryUserAccountsEnabled = NO;
  SOGoIMAPAclConformsToIMAPExt = YES;
}}
"""

USERS_SQL = (
    """CREATE TABLE sogo_users (c_uid varchar(256) PRIMARY KEY, c_name varchar(256),
    c_password varchar(256), c_cn varchar(256), mail varchar(256))""",
    "INSERT INTO sogo_users VALUES (%(uid)s, %(uid)s, %(password)s, %(cn)s, %(mail)s)",
)


def sogo_installed() -> bool:
    """True when sogod and memcached are installed."""
    return Path(SOGOD).exists() and Path(MEMCACHED).exists()


def _create_users(db: str, username: str, password: str) -> None:
    params = {
        "uid": username,
        "password": password,
        "cn": username.capitalize(),
        "mail": f"{username}@{MAIL_DOMAIN}",
    }
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db) as conn:
        for statement in USERS_SQL:
            conn.execute(statement, params)


def _gnustep_conf(root: Path) -> Path:
    """GNUstep.conf with the user defaults in ``root/defaults`` (no ~/.GNUstep.conf)."""
    overridden = ("GNUSTEP_USER_DEFAULTS_DIR=", "GNUSTEP_USER_CONFIG_FILE=")
    lines = []
    if GNUSTEP_CONF.exists():
        lines = [
            line
            for line in GNUSTEP_CONF.read_text().splitlines()
            if not line.startswith(overridden)
        ]
    lines += [
        f"GNUSTEP_USER_DEFAULTS_DIR={root / 'defaults'}",
        f"GNUSTEP_USER_CONFIG_FILE={root / 'no-user-GNUstep.conf'}",
    ]
    conf = root / "GNUstep.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_sogo(
    tmp: Path, username: str = "alice", password: str = "secret-alice", notify: bool = True
) -> DebianServer:
    """Start memcached and sogod as ``sogo``; return the running server.

    ``base_url`` is ``http://127.0.0.1:PORT/SOGo/dav/<username>/Calendar/`` and
    ``calendar_url`` its ``personal/`` calendar (empty). Raises when it does not come up.
    """
    if not sogo_installed():
        raise RuntimeError("SOGo is not installed: run tests/debian_servers/install.sh")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        sink = MailSink.start()
        stack.callback(sink.stop)
        root = runtime_dir(stack, tmp, "sogo", "sogo")
        db = fresh_database(stack, "sogo_test")
        _create_users(db, username, password)
        port, memcached_port = free_port(), free_port()
        (root / "defaults").mkdir()
        (root / "defaults" / "sogod.plist").write_text(
            SOGOD_PLIST.format(
                port=port,
                root=root,
                pg=f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}",
                smtp_port=sink.port,
                mail_domain=MAIL_DOMAIN,
                memcached_port=memcached_port,
                notify="YES" if notify else "NO",
            )
        )
        gnustep_conf = _gnustep_conf(root)
        chown_tree(root, "sogo")

        memcached_log = log_file(tmp, "sogo", "memcached.log")
        memcached = spawn(
            stack,
            [MEMCACHED, "-l", "127.0.0.1", "-p", str(memcached_port), "-U", "0", "-m", "16"],
            memcached_log,
            user="sogo",
        )
        log_path = log_file(tmp, "sogo", "sogod.log")
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "GNUSTEP_CONFIG_FILE": str(gnustep_conf),
        }
        args = [SOGOD, "-WOUseWatchDog", "NO", "-WONoDetach", "YES"]
        proc = spawn(
            stack, args, log_path, user="sogo", env=env, cwd=root, nudge=lambda: poke(port)
        )

        base = f"http://127.0.0.1:{port}"
        home = f"{base}/SOGo/dav/{username}/Calendar/"
        wait_until_up(
            "sogo",
            lambda: http_status(home, "PROPFIND", (username, password)) == 207,
            [proc, memcached],
            [log_path, memcached_log],
        )
        server = DebianServer(
            kind="sogo",
            base_url=home,
            username=username,
            password=password,
            process=proc,
            log_path=log_path,
            principal_url=f"{base}/SOGo/dav/{username}/",
            sink=sink,
            calendar_url=f"{home}personal/",
        )
        server.cleanup = stack.pop_all()
    server.start_seconds = time.monotonic() - started
    return server
