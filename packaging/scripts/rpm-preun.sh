#!/bin/sh
# substrate %preun (rpm): on erase ($1 is 0), what %systemd_preun does
# (disable and stop), and drop the alternatives; nothing on upgrade.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now substrate.service >/dev/null 2>&1 || :
	update-alternatives --remove rabbitmqctl /usr/lib/substrate/bin/rabbitmqctl || :
fi
exit 0
