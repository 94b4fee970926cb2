#!/bin/sh
# substrate preinst (deb) and %pre (rpm): the system user and group the
# service runs as, created before the files are unpacked so that
# /var/lib/substrate is unpacked owned by them. Kept on removal, as
# Debian's and Fedora's packages keep their system users.
set -e
if ! getent group substrate >/dev/null; then
	groupadd --system substrate
fi
if ! getent passwd substrate >/dev/null; then
	useradd --system --gid substrate --home-dir /var/lib/substrate --no-create-home \
		--shell /usr/sbin/nologin --comment "substrate daemon" substrate
fi
exit 0
