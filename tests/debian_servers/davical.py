"""DAViCal (Debian ``davical``) under its own Apache + mod_php, on a fresh PostgreSQL database.

- Database: ``davical_test_<random>`` made by DAViCal's own ``dba/create-database.sh``,
  with per-run roles ``davical_dba_<random>`` / ``davical_app_<random>``; all dropped at
  stop. The user is a row in ``usr`` + ``principal`` (plain ``**password``).
- Apache: ``apache2 -f httpd.conf -DFOREGROUND`` as ``www-data``, prefork + mod_php, one
  ``Listen 127.0.0.1:PORT``, logs to the process's own stdout/stderr (``log_path``).
- Configuration: DAViCal reads ``/etc/davical/config.php`` first when it exists, so the
  document root is a folder of symlinks into ``/usr/share/davical/htdocs`` and PHP's
  ``open_basedir`` leaves ``/etc`` out: DAViCal then falls back to ``../config/config.php``,
  which is ours.
- Connections: ``$c->use_persistent`` (PDO persistent connections, one per Apache child),
  as a busy DAViCal is run: without it every request opened a PostgreSQL connection, a new
  backend process, which was most of its time (GET 19 -> 6 ms, PUT 31 -> 17 ms here).
- Mail: PHP's ``sendmail_path`` is the sink's sendmail stand-in; ``$c->iMIP->send_email``
  is on (as on a server that sends invitations), so any iMIP DAViCal sends is captured.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from pathlib import Path

import psycopg

from tests.debian_servers.common import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    DebianServer,
    chown_tree,
    drop_database,
    drop_role,
    free_port,
    http_status,
    log_file,
    runtime_dir,
    spawn,
    wait_until_up,
)
from tests.debian_servers.mailsink import MailSink, write_sendmail

SHARE = Path("/usr/share/davical")
APACHE = "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
MAIL_DOMAIN = "example.test"

CONFIG_PHP = """<?php
$c->pg_connect[] = "host={pg_host} port={pg_port} dbname={db} user={app_role}";
$c->system_name = "DAViCal test server";
$c->admin_email = "calendar-admin@{mail_domain}";
$c->domain_name = "127.0.0.1";
$c->iMIP = (object) array("send_email" => {imip});
$c->use_persistent = true;
"""

LOAD_MODULES = (
    ("mpm_prefork_module", "mod_mpm_prefork.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("alias_module", "mod_alias.so"),
    ("rewrite_module", "mod_rewrite.so"),
    ("env_module", "mod_env.so"),
    ("mime_module", "mod_mime.so"),
    ("dir_module", "mod_dir.so"),
    ("headers_module", "mod_headers.so"),
    ("php_module", "libphp8.2.so"),
)

HTTPD_CONF = """\
ServerRoot {root}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {root}/run/httpd.pid
DefaultRuntimeDir {root}/run
Mutex file:{root}/run default
ErrorLog /proc/self/fd/2
LogLevel warn
{modules}
StartServers 2
MinSpareServers 1
MaxSpareServers 4
MaxRequestWorkers 8
TypesConfig /dev/null
LogFormat "%h %u \\"%r\\" %>s %b" short
CustomLog /proc/self/fd/1 short
DocumentRoot {root}/htdocs
DirectoryIndex index.php
<Directory />
  AllowOverride None
  Require all denied
</Directory>
<Directory {root}/htdocs>
  Options FollowSymLinks
  AllowOverride None
  Require all granted
</Directory>
<FilesMatch "\\.php$">
  SetHandler application/x-httpd-php
</FilesMatch>
php_admin_value open_basedir "{root}/:{share}/:/usr/share/awl/:/usr/share/php/"
php_admin_value sendmail_path "{root}/sendmail -t -i"
php_admin_value sys_temp_dir "{root}/tmp"
php_admin_value upload_tmp_dir "{root}/tmp"
php_admin_value session.save_path "{root}/tmp"
php_admin_value error_log /proc/self/fd/2
php_value include_path ".:/usr/share/awl/inc"
php_value default_charset "utf-8"
php_value error_reporting "E_ALL & ~E_NOTICE & ~E_DEPRECATED"
RewriteEngine On
RewriteRule ^/\\.well-known/(.*)$ /caldav.php/.well-known/$1 [NC,L]
RewriteCond %{{REQUEST_URI}} !^/[A-Za-z]+\\.php
RewriteCond %{{REQUEST_URI}} !^/(css|images|js)/
RewriteRule ^/(.*)$ /caldav.php/$1 [L]
"""

ADD_USER_SQL = (
    """INSERT INTO usr (active, email_ok, updated, username, password, fullname, email)
    VALUES (TRUE, current_date, current_date, %(username)s, %(password)s, %(fullname)s,
            %(email)s)""",
    """INSERT INTO principal (type_id, user_no, displayname, default_privileges)
    SELECT 1, user_no, %(fullname)s, 0::BIT(24) FROM usr WHERE username = %(username)s""",
)


def davical_installed() -> bool:
    """True when DAViCal, Apache and mod_php are installed."""
    return (
        (SHARE / "htdocs" / "caldav.php").exists()
        and Path(APACHE).exists()
        and (MODULES / "libphp8.2.so").exists()
    )


def _create_database(root: Path, log: Path, db: str, dba: str, app: str) -> None:
    """Run DAViCal's own create-database.sh (schema, base data, permissions)."""
    env = {
        **os.environ,
        "PGHOST": PG_HOST,
        "PGPORT": str(PG_PORT),
        "PGUSER": PG_USER,
        "PSQLOPTS": f"-U {PG_USER}",
        "DBAOPTS": f"--dbhost {PG_HOST} --dbport {PG_PORT}",
        "TMPDIR": str(root / "tmp"),
    }
    args = ["sh", str(SHARE / "dba" / "create-database.sh"), db, secrets.token_hex(8), dba, app]
    with log.open("ab") as out:
        result = subprocess.run(
            args, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, timeout=120
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"davical create-database.sh failed ({result.returncode}):\n"
            + log.read_text(errors="replace")[-3000:]
        )


def _add_user(db: str, username: str, password: str) -> None:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db) as conn:
        params = {
            "username": username,
            "password": f"**{password}",
            "fullname": username.capitalize(),
            "email": f"{username}@{MAIL_DOMAIN}",
        }
        for statement in ADD_USER_SQL:
            conn.execute(statement, params)


def _write_site(root: Path, port: int, db: str, app_role: str, imip: bool) -> Path:
    (root / "htdocs").mkdir()
    for entry in (SHARE / "htdocs").iterdir():
        (root / "htdocs" / entry.name).symlink_to(entry)
    (root / "inc").symlink_to(SHARE / "inc")
    for sub in ("config", "run", "tmp"):
        (root / sub).mkdir(exist_ok=True)
    (root / "config" / "config.php").write_text(
        CONFIG_PHP.format(
            pg_host=PG_HOST,
            pg_port=PG_PORT,
            db=db,
            app_role=app_role,
            mail_domain=MAIL_DOMAIN,
            imip="true" if imip else "false",
        )
    )
    modules = "\n".join(f"LoadModule {name} {MODULES / so}" for name, so in LOAD_MODULES)
    conf = root / "httpd.conf"
    conf.write_text(HTTPD_CONF.format(root=root, port=port, share=SHARE, modules=modules))
    return conf


def start_davical(
    tmp: Path, username: str = "alice", password: str = "secret-alice", imip: bool = True
) -> DebianServer:
    """Start DAViCal on Apache as ``www-data``; return the running server.

    ``base_url`` is ``http://127.0.0.1:PORT/caldav.php/<username>/`` (home = principal) and
    ``calendar_url`` an empty ``calendar/`` made at start. Raises when it does not come up.
    """
    if not davical_installed():
        raise RuntimeError("DAViCal is not installed: run tests/debian_servers/install.sh")
    started = time.monotonic()
    suffix = secrets.token_hex(4)
    db, dba, app = f"davical_test_{suffix}", f"davical_dba_{suffix}", f"davical_app_{suffix}"
    with contextlib.ExitStack() as stack:
        sink = MailSink.start()
        stack.callback(sink.stop)
        root = runtime_dir(stack, tmp, "davical", "www-data")
        (root / "tmp").mkdir()
        stack.callback(drop_role, app)
        stack.callback(drop_role, dba)
        stack.callback(drop_database, db)
        _create_database(root, log_file(tmp, "davical", "create-database.log"), db, dba, app)
        _add_user(db, username, password)
        port = free_port()
        conf = _write_site(root, port, db, app, imip)
        write_sendmail(root / "sendmail", sink, root / "sendmail.log")
        chown_tree(root, "www-data")
        log_path = log_file(tmp, "davical", "apache.log", user="www-data")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        args = [APACHE, "-f", str(conf), "-DFOREGROUND"]
        proc = spawn(stack, args, log_path, user="www-data", env=env, cwd=root)

        base = f"http://127.0.0.1:{port}"
        home = f"{base}/caldav.php/{username}/"
        wait_until_up(
            "davical",
            lambda: http_status(home, "PROPFIND", (username, password)) == 207,
            [proc],
            [log_path],
        )
        server = DebianServer(
            kind="davical",
            base_url=home,
            username=username,
            password=password,
            process=proc,
            log_path=log_path,
            principal_url=home,
            sink=sink,
        )
        server.calendar_url = server.make_calendar("calendar")
        server.cleanup = stack.pop_all()
    server.start_seconds = time.monotonic() - started
    return server
