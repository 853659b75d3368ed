#!/bin/sh
# Install the Debian packages the CalDAV test servers in tests/debian_servers need:
# Cyrus IMAP with CalDAV, DAViCal (Apache + mod_php), SOGo (+ memcached).
#
# Idempotent: does nothing when every package is already installed (checked with dpkg -s).
# Packages' own system services are never used by the tests; while installing, a
# policy-rc.d that forbids starting them is put in place when the machine has none.
# python3 runs the sendmail stand-in that relays mail to the tests' SMTP sink.
# PostgreSQL (the server) is expected to be there already.
set -eu

PACKAGES="cyrus-imapd cyrus-caldav sasl2-bin
davical apache2-bin libapache2-mod-php php-cli php-pgsql php-xml php-curl postgresql-client
sogo memcached
python3"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing="$missing $pkg"
    fi
done
if [ -z "$missing" ]; then
    echo "debian_servers: all packages installed"
    exit 0
fi

# cyrus-common needs a mail transport agent; when none is installed, take msmtp-mta
# (no daemon, no queue), never replacing one that is already there.
if ! dpkg-query -W -f='${Status} ${Provides}\n' 2>/dev/null \
    | grep -q '^install ok installed.*mail-transport-agent'; then
    missing="$missing msmtp-mta"
fi

created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() {
    if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

echo "debian_servers: installing$missing"
export DEBIAN_FRONTEND=noninteractive
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
    apt-get update -q
fi
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing || {
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
}
