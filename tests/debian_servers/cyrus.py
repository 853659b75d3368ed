"""Cyrus IMAP 3 with CalDAV (Debian ``cyrus-imapd`` + ``cyrus-caldav``) on loopback.

``master -C imapd.conf -M cyrus.conf`` runs as the ``cyrus`` user with everything in a
private runtime folder. Cyrus's children do not inherit ``-C`` from master, so every
command line in ``cyrus.conf`` carries it (else they read ``/etc/imapd.conf``).

Users live in a private sasldb (``saslpasswd2 -f``). Cyrus only provisions calendars for a
user whose INBOX exists, and ``httpd`` never creates one, so the start logs the user in once
over IMAP (on another loopback port) with ``autocreate_quota: 0``: that creates the INBOX,
and the first authenticated CalDAV request then creates ``Default``, ``Inbox`` and
``Outbox`` in ``/dav/calendars/user/<user>/``.

Mail: Cyrus submits iMIP (and sieve mail) over SMTP to the sink (``smtp_backend: host``);
its ``sendmail`` backend would need a program that speaks SMTP on stdin (``-bs``), so the
``sendmail:`` option only points at the sink's stand-in for anything that still runs it.

Cyrus logs only to syslog; with no syslog daemon those lines are lost. ``log_path`` has
master's own output (``-D``), and ``tmp/cyrus/sendmail.log`` each sendmail call.
"""

from __future__ import annotations

import contextlib
import imaplib
import shutil
import subprocess
import time
from pathlib import Path

from tests.debian_servers.common import (
    DebianServer,
    chown_tree,
    free_port,
    http_status,
    log_file,
    runtime_dir,
    spawn,
    wait_until_up,
)
from tests.debian_servers.mailsink import MailSink, write_sendmail

MASTER = "/usr/lib/cyrus/bin/master"
SASLPASSWD = "/usr/sbin/saslpasswd2"
SERVERNAME = "localhost"
MAIL_DOMAIN = "example.test"

IMAPD_CONF = """\
configdirectory: {root}/conf
partition-default: {root}/spool
defaultpartition: default
servername: {servername}
syslog_prefix: syncd-test-cyrus
temp_path: {root}/tmp
sievedir: {root}/conf/sieve
admins: cyrusadmin
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {root}/sasldb2
sasl_mech_list: PLAIN
allowplaintext: yes
autocreate_quota: 0
autocreate_users: anyone
httpmodules: caldav
caldav_allowscheduling: on
caldav_create_default: yes
caldav_create_sched: yes
caldav_create_attach: no
calendar_user_address_set: {mail_domain}
sendmail: {root}/sendmail
smtp_backend: host
smtp_host: 127.0.0.1:{smtp_port}/noauth
conversations: no
"""

CYRUS_CONF = """\
START {{
  recover cmd="ctl_cyrusdb -C {root}/imapd.conf -r"
}}
SERVICES {{
  imap cmd="imapd -C {root}/imapd.conf" listen="127.0.0.1:{imap_port}" prefork=0
  http cmd="httpd -C {root}/imapd.conf" listen="127.0.0.1:{http_port}" prefork=1
}}
EVENTS {{
}}
DAEMON {{
}}
"""


def cyrus_installed() -> bool:
    """True when the Debian packages this module needs are installed."""
    return Path(MASTER).exists() and Path("/usr/lib/cyrus/bin/httpd").exists()


def _write_config(root: Path, http_port: int, imap_port: int, smtp_port: int) -> None:
    for sub in ("conf/db", "conf/socket", "conf/proc", "conf/lock", "conf/sieve"):
        (root / sub).mkdir(parents=True)
    for sub in ("spool", "tmp", "run"):
        (root / sub).mkdir()
    values = {
        "root": root,
        "servername": SERVERNAME,
        "mail_domain": MAIL_DOMAIN,
        "http_port": http_port,
        "imap_port": imap_port,
        "smtp_port": smtp_port,
    }
    (root / "imapd.conf").write_text(IMAPD_CONF.format(**values))
    (root / "cyrus.conf").write_text(CYRUS_CONF.format(**values))


def _add_user(root: Path, username: str, password: str) -> None:
    subprocess.run(
        [SASLPASSWD, "-p", "-c", "-f", str(root / "sasldb2"), "-u", SERVERNAME, username],
        input=password.encode(),
        check=True,
        capture_output=True,
        timeout=30,
    )


def _imap_login(port: int, username: str, password: str) -> None:
    """Log in once: Cyrus then creates the user's INBOX (autocreate_quota)."""
    with imaplib.IMAP4("127.0.0.1", port, timeout=5) as imap:
        imap.login(username, password)
        imap.logout()


def start_cyrus(tmp: Path, username: str = "alice", password: str = "secret-alice") -> DebianServer:
    """Start Cyrus (IMAP + CalDAV) as the ``cyrus`` user; return the running server.

    ``base_url`` is ``http://127.0.0.1:PORT/dav/calendars/user/<username>/`` and
    ``calendar_url`` its ``Default/`` calendar (empty). Raises when it does not come up.
    """
    if not cyrus_installed():
        raise RuntimeError("Cyrus is not installed: run tests/debian_servers/install.sh")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        sink = MailSink.start()
        stack.callback(sink.stop)
        root = runtime_dir(stack, tmp, "cyrus", "cyrus")
        http_port, imap_port = free_port(), free_port()
        _write_config(root, http_port, imap_port, sink.port)
        write_sendmail(root / "sendmail", sink, root / "sendmail.log")
        _add_user(root, username, password)
        chown_tree(root, "cyrus")
        log_path = log_file(tmp, "cyrus", "master.log")
        args = [
            MASTER,
            "-D",
            "-C",
            str(root / "imapd.conf"),
            "-M",
            str(root / "cyrus.conf"),
            "-p",
            str(root / "run" / "master.pid"),
        ]
        stack.callback(_keep_sendmail_log, root, tmp)
        proc = spawn(stack, args, log_path, user="cyrus", cwd=root)

        base = f"http://127.0.0.1:{http_port}"
        home = f"{base}/dav/calendars/user/{username}/"
        state = {"inbox": False}

        def probe() -> bool:
            if not state["inbox"]:
                try:
                    _imap_login(imap_port, username, password)
                except (imaplib.IMAP4.error, EOFError):
                    return False
                state["inbox"] = True
            return http_status(home, "PROPFIND", (username, password)) == 207

        wait_until_up("cyrus", probe, [proc], [log_path])
        server = DebianServer(
            kind="cyrus",
            base_url=home,
            username=username,
            password=password,
            process=proc,
            log_path=log_path,
            principal_url=f"{base}/dav/principals/user/{username}/",
            sink=sink,
            calendar_url=f"{home}Default/",
        )
        server.cleanup = stack.pop_all()
    server.start_seconds = time.monotonic() - started
    return server


def _keep_sendmail_log(root: Path, tmp: Path) -> None:
    """Copy the sendmail stand-in's log next to master.log before the runtime goes."""
    with contextlib.suppress(OSError):
        shutil.copyfile(root / "sendmail.log", tmp / "cyrus" / "sendmail.log")
