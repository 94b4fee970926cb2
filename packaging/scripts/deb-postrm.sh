#!/bin/sh
# substrate postrm (deb). Purge forgets the unit's enablement; it leaves
# /var/lib/substrate (etcd's member, the broker's users, queues and
# messages) and the substrate user in place: remove them by hand once the
# data is no longer wanted (docs/operations.md).
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
case "$1" in
remove)
	if [ -x /usr/bin/deb-systemd-helper ]; then
		deb-systemd-helper mask substrate.service >/dev/null || true
	fi
	;;
purge)
	if [ -x /usr/bin/deb-systemd-helper ]; then
		deb-systemd-helper purge substrate.service >/dev/null || true
		deb-systemd-helper unmask substrate.service >/dev/null || true
	fi
	;;
esac
exit 0
