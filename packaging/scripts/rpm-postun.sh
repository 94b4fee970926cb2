#!/bin/sh
# substrate %postun (rpm): what %systemd_postun_with_restart does: reload
# units, and after an upgrade ($1 is 1 or more) restart the service if it
# was running. /var/lib/substrate and the substrate user stay (as RPMs keep
# their data and system users).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
	systemctl try-restart substrate.service >/dev/null 2>&1 || :
fi
exit 0
