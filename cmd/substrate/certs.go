package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"

	"substrate/internal/tlsutil"
)

// certsCommand is `substrate certs --host controller,10.0.0.11 --dir DIR`:
// a lab CA (kept when DIR has one), a server certificate for the given
// names plus localhost, 127.0.0.1 and ::1, and a client certificate, then
// the lines that put them to use in etcd.conf, substrate.yaml and
// oslo.messaging's [oslo_messaging_rabbit].
func certsCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("substrate certs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	hosts := fs.String("host", "", "comma-separated `names` and addresses of the controller (the server certificate's SANs)")
	dir := fs.String("dir", "substrate-certs", "`directory` to write ca.pem, server.pem, client.pem and their keys to")
	clientCN := fs.String("client-cn", "openstack", "common `name` of the client certificate: the AMQP user EXTERNAL logs in as")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	var names []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			names = append(names, h)
		}
	}
	if len(names) == 0 {
		return usageError{errors.New("--host: name the controller, e.g. --host controller,10.0.0.11")}
	}
	if *clientCN == "" {
		return usageError{errors.New("--client-cn is empty")}
	}
	files, err := tlsutil.WriteLab(*dir, names, *clientCN)
	if err != nil {
		return err
	}
	printCertUsage(stdout, files, names, *clientCN)
	return nil
}

func printCertUsage(w io.Writer, f tlsutil.LabFiles, names []string, clientCN string) {
	// The address etcd listens on: the first IP given, else the first name.
	addr := names[0]
	for _, n := range names {
		if net.ParseIP(n) != nil {
			addr = n
			break
		}
	}
	hostport := func(port int) string { return net.JoinHostPort(addr, fmt.Sprint(port)) }
	fmt.Fprintf(w, `Wrote %s (CA), %s and %s (server: %s), %s and %s (client: CN=%s); keys are mode 0600.

# etcd.conf (substrate serve --etcd-config FILE): https on the client and
# peer ports, client certificates required. Use https:// in
# ETCD_INITIAL_CLUSTER too.
ETCD_LISTEN_CLIENT_URLS="https://%s"
ETCD_ADVERTISE_CLIENT_URLS="https://%s"
ETCD_LISTEN_PEER_URLS="https://%s"
ETCD_INITIAL_ADVERTISE_PEER_URLS="https://%s"
ETCD_CERT_FILE="%s"
ETCD_KEY_FILE="%s"
ETCD_TRUSTED_CA_FILE="%s"
ETCD_CLIENT_CERT_AUTH="true"
ETCD_PEER_CERT_FILE="%s"
ETCD_PEER_KEY_FILE="%s"
ETCD_PEER_TRUSTED_CA_FILE="%s"
ETCD_PEER_CLIENT_CERT_AUTH="true"
# etcdctl: etcdctl --endpoints https://%s --cacert %s --cert %s --key %s get foo

# substrate.yaml (substrate serve --config FILE): AMQPS on 5671, HTTPS on 15671
tls-cert: %s
tls-key: %s
tls-ca: %s
tls-client-auth: request

# /etc/<service>/<service>.conf of each OpenStack service; the transport
# URL's port becomes 5671, e.g. transport_url = rabbit://openstack:RABBIT_PASS@%s/
[oslo_messaging_rabbit]
ssl = True
ssl_ca_file = %s
ssl_cert_file = %s
ssl_key_file = %s

# A client may log in with client.pem instead of a password (SASL
# EXTERNAL: pika's ExternalCredentials, kombu's login_method="EXTERNAL");
# the user %q must exist: substrate ctl add_user %s <any password>
`,
		f.CA, f.Server, f.ServerKey, strings.Join(append(names, tlsutil.LocalHosts...), ","), f.Client, f.ClientKey, clientCN,
		hostport(2379), hostport(2379), hostport(2380), hostport(2380),
		f.Server, f.ServerKey, f.CA, f.Server, f.ServerKey, f.CA,
		hostport(2379), f.CA, f.Client, f.ClientKey,
		f.Server, f.ServerKey, f.CA,
		net.JoinHostPort(names[0], "5671"),
		f.CA, f.Client, f.ClientKey,
		clientCN, clientCN)
}
