#!/usr/bin/env bash
# packaging/check.sh: checks the packages `make packages` wrote to dist/.
# The .rpm with Debian's rpm tool (files, owners, modes, conffile flags,
# scriptlets); the .deb by installing it on this machine with dpkg -i (as
# root: CI runs it after make test), checking files, owners, the
# alternatives and that nothing was started, verifying the installed unit
# with systemd-analyze, starting the installed binary as the substrate user
# with the installed config (on free loopback ports) and reaching it
# through /usr/bin/rabbitmqctl, upgrading over itself (a changed conffile
# kept), then removing and purging it. Prints "N passed, 0 failed" at the
# end; exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() {
	echo "FAIL $*" >&2
	echo "$passed passed, 1 failed"
	exit 1
}
check() { # check DESCRIPTION COMMAND...: COMMAND must succeed
	local what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}

shopt -s nullglob
debs=(dist/substrate_*.deb)
rpms=(dist/substrate-*.rpm)
[ ${#debs[@]} = 1 ] && [ ${#rpms[@]} = 1 ] || fail "want one .deb and one .rpm in dist/ (make packages), found: ${debs[*]} ${rpms[*]}"
deb=${debs[0]}
rpm=${rpms[0]}

# Every path either package installs, directories included.
expected="/etc/substrate
/etc/substrate/substrate.yaml
/usr/bin/substrate
/usr/lib/substrate/bin/etcd
/usr/lib/substrate/bin/memcached
/usr/lib/substrate/bin/rabbitmq-diagnostics
/usr/lib/substrate/bin/rabbitmqctl
/usr/lib/systemd/system/substrate.service
/usr/share/doc/substrate/README.md
/var/lib/substrate"

# ---- RPM, with Debian's rpm tool ----
rpm_files=$(rpm -qlp "$rpm" 2>/dev/null)
missing=$(comm -23 <(echo "$expected" | sort) <(echo "$rpm_files" | sort))
[ -z "$missing" ] || fail "rpm -qlp lacks: $missing"
ok "rpm -qlp lists the binary, the names, the unit, the config and the data directory"
meta=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEMODES:perms}\n]' "$rpm" 2>/dev/null)
grep -qx '/etc/substrate/substrate.yaml cn root:root -rw-r--r--' <<<"$meta" || fail "rpm: config not %config(noreplace) root 0644: $(grep substrate.yaml <<<"$meta")"
ok "rpm: /etc/substrate/substrate.yaml is %config(noreplace)"
grep -qx '/var/lib/substrate  substrate:substrate drwx------' <<<"$meta" || fail "rpm: data directory: $(grep /var/lib/substrate <<<"$meta")"
ok "rpm: /var/lib/substrate owned by substrate, 0700"
grep -qx '/usr/bin/substrate  root:root -rwxr-xr-x' <<<"$meta" || fail "rpm: binary: $(grep /usr/bin/substrate <<<"$meta")"
ok "rpm: /usr/bin/substrate root 0755"
for name in rabbitmqctl rabbitmq-diagnostics etcd memcached; do
	link=$(rpm -qp --qf '[%{FILENAMES} %{FILELINKTOS}\n]' "$rpm" 2>/dev/null | awk -v f=/usr/lib/substrate/bin/$name '$1 == f {print $2}')
	[ "$link" = /usr/bin/substrate ] || fail "rpm: /usr/lib/substrate/bin/$name links to '$link'"
done
ok "rpm: rabbitmqctl, rabbitmq-diagnostics, etcd, memcached link to /usr/bin/substrate"
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
for want in 'preinstall scriptlet' 'useradd --system' 'postinstall scriptlet' \
	'update-alternatives --install /usr/bin/rabbitmqctl rabbitmqctl /usr/lib/substrate/bin/rabbitmqctl' \
	'systemctl --no-reload preset substrate.service' 'preuninstall scriptlet' 'disable --now substrate.service' \
	'update-alternatives --remove rabbitmqctl' 'postuninstall scriptlet' 'systemctl try-restart substrate.service'; do
	grep -qF -- "$want" <<<"$scripts" || fail "rpm -qp --scripts lacks '$want'"
done
ok "rpm -qp --scripts: user in %pre, alternatives and preset in %post, disable in %preun, try-restart in %postun"
for tag in PREIN POSTIN PREUN POSTUN; do
	rpm -qp --qf "%{$tag}" "$rpm" 2>/dev/null | sh -n || fail "rpm: %$tag is not valid sh"
done
ok "rpm: every scriptlet parses with sh -n"
# The scriptlets run as rpm runs them ($1: 1 on install, 2 on upgrade, 0
# on erase), with systemctl, update-alternatives, chown, chmod, getent,
# groupadd and useradd replaced by stubs that log their arguments.
stubs=$(mktemp -d)
for c in systemctl update-alternatives chown chmod groupadd useradd; do
	printf '#!/bin/sh\necho "%s $*" >>"%s/log"\n' "$c" "$stubs" >"$stubs/$c"
done
printf '#!/bin/sh\nexit 2\n' >"$stubs/getent" # no such user yet
mkdir -p "$stubs/run/systemd/system"
chmod +x "$stubs"/*
scriptlet() { # scriptlet TAG ARG: run the scriptlet, print what it called
	rpm -qp --qf "%{$1}" "$rpm" 2>/dev/null | sed "s|/run/systemd/system|$stubs/run/systemd/system|g" >"$stubs/script"
	: >"$stubs/log"
	PATH="$stubs:/usr/bin:/bin" sh "$stubs/script" "$2" || fail "rpm %$1 $2 exited $?"
	cat "$stubs/log"
}
pre=$(scriptlet PREIN 1)
grep -qx 'groupadd --system substrate' <<<"$pre" && grep -q '^useradd --system --gid substrate --home-dir /var/lib/substrate' <<<"$pre" ||
	fail "%pre 1 ran: $pre"
post1=$(scriptlet POSTIN 1)
post2=$(scriptlet POSTIN 2)
grep -qx 'systemctl --no-reload preset substrate.service' <<<"$post1" || fail "%post 1 did not preset: $post1"
grep -q preset <<<"$post2" && fail "%post 2 (upgrade) ran preset: $post2"
grep -q '^update-alternatives --install /usr/bin/rabbitmqctl rabbitmqctl /usr/lib/substrate/bin/rabbitmqctl 50 --slave /usr/bin/rabbitmq-diagnostics' <<<"$post1" ||
	fail "%post 1 alternatives: $post1"
grep -qx 'chown substrate:substrate /var/lib/substrate' <<<"$post2" || fail "%post 2 chown: $post2"
grep -q 'systemctl start' <<<"$post1$post2" && fail "%post starts the service: $post1 $post2"
preun0=$(scriptlet PREUN 0)
preun1=$(scriptlet PREUN 1)
grep -qx 'systemctl --no-reload disable --now substrate.service' <<<"$preun0" && grep -q '^update-alternatives --remove rabbitmqctl' <<<"$preun0" ||
	fail "%preun 0 (erase): $preun0"
[ -z "$preun1" ] || fail "%preun 1 (upgrade) did: $preun1"
postun0=$(scriptlet POSTUN 0)
postun1=$(scriptlet POSTUN 1)
grep -q try-restart <<<"$postun0" && fail "%postun 0 (erase) restarts: $postun0"
grep -qx 'systemctl try-restart substrate.service' <<<"$postun1" || fail "%postun 1 (upgrade): $postun1"
rm -rf "$stubs"
ok "rpm scriptlets run with stubs: user in %pre, preset on install only, alternatives, disable on erase, try-restart on upgrade"
requires=$(rpm -qp --requires "$rpm" 2>/dev/null)
grep -qx shadow-utils <<<"$requires" || fail "rpm: no Requires: shadow-utils (useradd)"
ok "rpm: requires shadow-utils"

# ---- Neither package clashes with Debian's rabbitmq-server ----
if dpkg -s rabbitmq-server >/dev/null 2>&1; then
	rabbit_files=$(dpkg -L rabbitmq-server | while read -r f; do [ -d "$f" ] || echo "$f"; done | sort)
	clash=$(comm -12 <(echo "$rabbit_files") <(echo "$rpm_files" | sort))
	[ -z "$clash" ] || fail "files also in rabbitmq-server: $clash"
	ok "no file of rabbitmq-server ($(wc -l <<<"$rabbit_files") files) is in the packages"
elif [ "${SUBSTRATE_REQUIRE_CLIENTS:-}" = 1 ]; then
	fail "rabbitmq-server is not installed: cannot check for clashes"
else
	echo "skip clash check: rabbitmq-server not installed"
fi

# ---- Debian package ----
deb_files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | grep -v '^$' | sort)
missing=$(comm -23 <(echo "$expected" | sort) <(echo "$deb_files"))
[ -z "$missing" ] || fail "dpkg-deb -c lacks: $missing"
ok "dpkg-deb -c lists the same files"
[ "$(dpkg-deb -f "$deb" Package)" = substrate ] || fail "deb: Package field"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/substrate/substrate.yaml || fail "deb: conffiles lacks /etc/substrate/substrate.yaml"
ok "deb: /etc/substrate/substrate.yaml is a conffile"

# The maintainer scripts' branches for a running systemd (which this
# machine may not have), with deb-systemd-helper, deb-systemd-invoke,
# systemctl, update-alternatives, chown and chmod as stubs that log.
stubs=$(mktemp -d)
for c in deb-systemd-helper deb-systemd-invoke systemctl update-alternatives chown chmod; do
	printf '#!/bin/sh\necho "%s $*" >>"%s/log"\n' "$c" "$stubs" >"$stubs/$c"
done
mkdir -p "$stubs/run/systemd/system" "$stubs/control"
chmod +x "$stubs"/*
dpkg-deb -e "$deb" "$stubs/control"
debscript() { # debscript NAME ARGS...: run the maintainer script, print what it called
	local name=$1
	shift
	sed "s|/run/systemd/system|$stubs/run/systemd/system|g" "$stubs/control/$name" >"$stubs/script"
	: >"$stubs/log"
	PATH="$stubs:/usr/bin:/bin" sh "$stubs/script" "$@" || fail "deb $name $* exited $?"
	cat "$stubs/log"
}
install=$(debscript postinst configure)
upgrade=$(debscript postinst configure 0.1.1-1)
grep -qx 'deb-systemd-invoke start substrate.service' <<<"$install" || fail "postinst configure (install) did not start: $install"
grep -qx 'deb-systemd-helper enable substrate.service' <<<"$install" || fail "postinst configure did not enable: $install"
grep -qx 'deb-systemd-invoke try-restart substrate.service' <<<"$upgrade" || fail "postinst configure OLD (upgrade): $upgrade"
grep -q '^update-alternatives --install /usr/bin/rabbitmqctl rabbitmqctl /usr/lib/substrate/bin/rabbitmqctl 50' <<<"$install" || fail "postinst alternatives: $install"
remove=$(debscript prerm remove)
upgrading=$(debscript prerm upgrade 0.1.2-1)
grep -qx 'deb-systemd-invoke stop substrate.service' <<<"$remove" && grep -q '^update-alternatives --remove rabbitmqctl' <<<"$remove" ||
	fail "prerm remove: $remove"
[ -z "$upgrading" ] || fail "prerm upgrade did: $upgrading"
purge=$(debscript postrm purge)
grep -qx 'deb-systemd-helper purge substrate.service' <<<"$purge" || fail "postrm purge: $purge"
rm -rf "$stubs"
ok "deb maintainer scripts with stubs: start on install, try-restart on upgrade, stop and drop alternatives on remove, purge"

if [ "$(id -u)" != 0 ]; then
	echo "not root: dpkg -i and the installed checks skipped"
	echo "$passed passed, 0 failed"
	exit 0
fi
if dpkg -s substrate >/dev/null 2>&1; then
	[ "${CI:-}" = true ] || fail "a substrate package is installed already: this check installs and purges it; remove it first (dpkg --purge substrate)"
	dpkg --purge substrate
fi

# Package scripts must not start daemons here: policy-rc.d says no, as
# during .ci/run's apt-get. deb-systemd-invoke honours it.
policy=/usr/sbin/policy-rc.d
created_policy=0
user_existed=0
getent passwd substrate >/dev/null && user_existed=1
serve_pid=
tmp=$(mktemp -d)
cleanup() {
	set +e
	if [ -n "$serve_pid" ]; then
		kill "$serve_pid" 2>/dev/null
		wait "$serve_pid" 2>/dev/null
	fi
	dpkg --purge substrate >/dev/null 2>&1 || true
	rm -rf /var/lib/substrate
	if [ "$user_existed" = 0 ]; then
		userdel substrate 2>/dev/null || true
		groupdel substrate 2>/dev/null || true
	fi
	if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	created_policy=1
fi

dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -i $deb"; }
ok "dpkg -i $deb"
[ "$(dpkg-query -W -f '${Status}' substrate)" = "install ok installed" ] || fail "dpkg status: $(dpkg-query -W -f '${Status}' substrate)"
ok "dpkg: install ok installed"
check "/usr/bin/substrate runs" sh -c '/usr/bin/substrate version | grep -q "^substrate "'
uid=$(id -u substrate)
[ "$uid" -lt 1000 ] || fail "substrate user uid $uid is not a system uid"
[ "$(getent passwd substrate | cut -d: -f6,7)" = /var/lib/substrate:/usr/sbin/nologin ] || fail "substrate user: $(getent passwd substrate)"
ok "system user substrate (uid $uid, home /var/lib/substrate, nologin)"
[ "$(stat -c '%U:%G %a' /var/lib/substrate)" = "substrate:substrate 700" ] || fail "/var/lib/substrate: $(stat -c '%U:%G %a' /var/lib/substrate)"
ok "/var/lib/substrate substrate:substrate 0700"
[ "$(stat -c '%U:%G %a' /etc/substrate/substrate.yaml)" = "root:root 644" ] || fail "config: $(stat -c '%U:%G %a' /etc/substrate/substrate.yaml)"
ok "/etc/substrate/substrate.yaml root 0644"
for name in rabbitmqctl rabbitmq-diagnostics; do
	[ "$(readlink -f /usr/bin/$name)" = /usr/bin/substrate ] || fail "/usr/bin/$name resolves to $(readlink -f /usr/bin/$name)"
	[ "$(readlink /etc/alternatives/$name)" = /usr/lib/substrate/bin/$name ] || fail "alternative $name: $(readlink /etc/alternatives/$name)"
done
ok "alternatives: /usr/bin/rabbitmqctl and /usr/bin/rabbitmq-diagnostics -> /usr/lib/substrate/bin/ -> /usr/bin/substrate"
if dpkg -s rabbitmq-server >/dev/null 2>&1; then
	[ "$(dpkg -S /usr/sbin/rabbitmqctl | cut -d: -f1)" = rabbitmq-server ] || fail "/usr/sbin/rabbitmqctl no longer rabbitmq-server's"
	ok "/usr/sbin/rabbitmqctl still rabbitmq-server's"
fi
if pgrep -u substrate >/dev/null; then fail "a process runs as substrate after dpkg -i: policy-rc.d was not honoured"; fi
ok "nothing started (policy-rc.d honoured)"
out=$(systemd-analyze verify /usr/lib/systemd/system/substrate.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify said: $out"
ok "systemd-analyze verify substrate.service: clean"
unit=/usr/lib/systemd/system/substrate.service
for d in Type=notify User=substrate LimitNOFILE=65536 ProtectSystem=strict ReadWritePaths=/var/lib/substrate NoNewPrivileges=yes \
	PrivateTmp=yes ProtectHome=yes Restart=on-failure 'ExecStart=/usr/bin/substrate serve --config /etc/substrate/substrate.yaml'; do
	grep -qx -- "$d" "$unit" || fail "unit lacks $d"
done
ok "unit: Type=notify, User, LimitNOFILE, hardening, Restart, ExecStart with the config"

# The installed binary, as the unit's user, with the installed config: a
# real start on free loopback ports (the defaults may be taken), reached
# through the rabbitmqctl alternative, which finds the server from the
# installed config's data-dir.
read -r p1 p2 p3 p4 p5 < <(python3 -c 'import socket
ss=[socket.socket() for _ in range(5)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(*[s.getsockname()[1] for s in ss])')
setpriv --reuid substrate --regid substrate --clear-groups /usr/bin/substrate serve --config /etc/substrate/substrate.yaml --host 127.0.0.1 \
	--amqp-port "$p1" --memcached-port "$p2" --etcd-client-port "$p3" --etcd-peer-port "$p4" --http-port "$p5" \
	>"$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 600); do
	grep -q 'substrate ready' "$tmp/serve.log" && break
	kill -0 "$serve_pid" 2>/dev/null || { cat "$tmp/serve.log"; fail "serve exited before ready"; }
	sleep 0.1
done
grep -q 'substrate ready' "$tmp/serve.log" || { cat "$tmp/serve.log"; fail "serve not ready in 60 s"; }
ok "serve --config /etc/substrate/substrate.yaml starts as substrate with data in /var/lib/substrate"
# By their full paths: with rabbitmq-server installed, root's PATH finds
# RabbitMQ's /usr/sbin/rabbitmqctl first (docs/operations.md). Nothing
# says where the data directory is: they read /etc/substrate/substrate.yaml.
vhosts=$(env -u SUBSTRATE_CONFIG -u SUBSTRATE_DATA_DIR /usr/bin/rabbitmqctl list_vhosts 2>&1) || fail "rabbitmqctl list_vhosts: $vhosts"
grep -qx / <<<"$vhosts" || fail "rabbitmqctl list_vhosts: $vhosts"
ok "/usr/bin/rabbitmqctl list_vhosts reaches it through the installed config"
for c in ping check_running check_local_alarms check_port_connectivity; do
	out=$(env -u SUBSTRATE_CONFIG -u SUBSTRATE_DATA_DIR /usr/bin/rabbitmq-diagnostics -q "$c" 2>&1) || fail "rabbitmq-diagnostics -q $c: $out"
done
ok "/usr/bin/rabbitmq-diagnostics -q ping, check_running, check_local_alarms, check_port_connectivity pass"
kill "$serve_pid"
wait "$serve_pid" || fail "serve exited $? after SIGTERM: $(tail -5 "$tmp/serve.log")"
serve_pid=
ok "serve stops on SIGTERM with status 0"
set +e
env -u SUBSTRATE_CONFIG -u SUBSTRATE_DATA_DIR /usr/bin/rabbitmq-diagnostics -q ping >/dev/null 2>&1
code=$?
set -e
[ "$code" = 69 ] || fail "rabbitmq-diagnostics -q ping with the server stopped exited $code, want 69 as RabbitMQ's"
ok "rabbitmq-diagnostics -q ping with the server stopped: 69, as RabbitMQ's"

# Upgrade over itself: a changed conffile is kept; postinst configure
# runs with the old version.
echo "# local change" >>/etc/substrate/substrate.yaml
dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -i (reinstall)"; }
grep -qx '# local change' /etc/substrate/substrate.yaml || fail "reinstall replaced the changed conffile"
[ "$(stat -c '%U:%G %a' /var/lib/substrate)" = "substrate:substrate 700" ] || fail "/var/lib/substrate after reinstall: $(stat -c '%U:%G %a' /var/lib/substrate)"
ok "reinstall keeps the changed config and the data directory's owner"

dpkg -r substrate >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -r"; }
[ ! -e /usr/bin/substrate ] || fail "dpkg -r left /usr/bin/substrate"
[ ! -e /usr/bin/rabbitmqctl ] && [ ! -L /usr/bin/rabbitmqctl ] || fail "dpkg -r left /usr/bin/rabbitmqctl"
[ ! -e /usr/bin/rabbitmq-diagnostics ] && [ ! -L /usr/bin/rabbitmq-diagnostics ] || fail "dpkg -r left /usr/bin/rabbitmq-diagnostics"
[ -f /etc/substrate/substrate.yaml ] || fail "dpkg -r removed the conffile"
[ -d /var/lib/substrate/etcd ] || fail "dpkg -r removed the data"
ok "dpkg -r: binary and alternatives gone; config and data kept"
dpkg --purge substrate >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg --purge"; }
[ ! -e /etc/substrate/substrate.yaml ] || fail "purge left the conffile"
[ -d /var/lib/substrate/etcd ] || fail "purge removed the data"
ok "dpkg --purge: config gone; data kept"

echo "$passed passed, 0 failed"
