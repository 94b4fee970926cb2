#!/bin/sh
# substrate postinst (deb): what debhelper's dh_installsystemd would add,
# plus the rabbitmqctl and rabbitmq-diagnostics alternatives.
set -e

alternatives() {
	# /usr/bin/rabbitmqctl and /usr/bin/rabbitmq-diagnostics: Debian's
	# rabbitmq-server puts its own in /usr/sbin (first in root's PATH), so
	# both can be installed; `update-alternatives --config rabbitmqctl`
	# shows the choice. A file at those paths that update-alternatives
	# does not manage is left alone (it warns).
	update-alternatives --install /usr/bin/rabbitmqctl rabbitmqctl /usr/lib/substrate/bin/rabbitmqctl 50 \
		--slave /usr/bin/rabbitmq-diagnostics rabbitmq-diagnostics /usr/lib/substrate/bin/rabbitmq-diagnostics
}

case "$1" in
configure)
	# The preinst created the user; a directory left by an older install
	# gets the owner and mode the service needs.
	chown substrate:substrate /var/lib/substrate
	chmod 0700 /var/lib/substrate
	alternatives
	# Enable the unit (deb-systemd-helper records it even without a running
	# systemd; was-enabled is true on a first install, so an administrator's
	# disable survives upgrades), then start it on a first install, or
	# restart it on upgrade if it was running (try-restart: a service the
	# administrator stopped stays stopped), through deb-systemd-invoke,
	# which asks policy-rc.d first: in a chroot, container build or CI that
	# forbids starting daemons, nothing starts.
	deb-systemd-helper unmask substrate.service >/dev/null || true
	if deb-systemd-helper --quiet was-enabled substrate.service; then
		deb-systemd-helper enable substrate.service >/dev/null || true
	else
		deb-systemd-helper update-state substrate.service >/dev/null || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			action=try-restart
		else
			action=start
		fi
		# A start that fails (the ports still held by rabbitmq-server,
		# memcached or etcd) does not fail the install: see
		# `journalctl -u substrate`.
		deb-systemd-invoke "$action" substrate.service >/dev/null || true
	fi
	;;
abort-upgrade | abort-remove | abort-deconfigure)
	alternatives
	;;
esac
exit 0
