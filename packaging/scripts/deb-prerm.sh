#!/bin/sh
# substrate prerm (deb): stop the service on removal (an upgrade restarts it
# from the new postinst instead), and drop the alternatives.
set -e
case "$1" in
remove | deconfigure)
	if [ -d /run/systemd/system ]; then
		deb-systemd-invoke stop substrate.service >/dev/null || true
	fi
	update-alternatives --remove rabbitmqctl /usr/lib/substrate/bin/rabbitmqctl
	;;
esac
exit 0
