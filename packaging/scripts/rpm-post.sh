#!/bin/sh
# substrate %post (rpm): what Fedora's %systemd_post does (on a first
# install, `systemctl preset`: the service is enabled only if the
# distribution's or the site's presets say so, and never started), plus
# the rabbitmqctl and rabbitmq-diagnostics alternatives. $1 is 1 on
# install, 2 on upgrade.
chown substrate:substrate /var/lib/substrate
chmod 0700 /var/lib/substrate
# RabbitMQ's RPMs put their own in /usr/sbin; where /usr/sbin is merged into
# /usr/bin and rabbitmq-server owns /usr/bin/rabbitmqctl, alternatives
# leaves that file alone.
update-alternatives --install /usr/bin/rabbitmqctl rabbitmqctl /usr/lib/substrate/bin/rabbitmqctl 50 \
	--slave /usr/bin/rabbitmq-diagnostics rabbitmq-diagnostics /usr/lib/substrate/bin/rabbitmq-diagnostics || :
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
	systemctl --no-reload preset substrate.service >/dev/null 2>&1 || :
fi
exit 0
