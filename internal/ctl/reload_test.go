package ctl

import (
	"context"
	"errors"
	"strings"
	"testing"

	"substrate/broker"
)

type reloader struct {
	*broker.Server
	err error
}

func (r reloader) ReloadCertificates() (string, error) { return "Certificate in use: serial 2a", r.err }

// TestReloadCertificates: reload_certificates reports the certificate in
// use, fails with 70 and the reason when the reload fails, and with 69
// when the process serves no TLS.
func TestReloadCertificates(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	res := Run(ctx, reloader{Server: b}, []string{"reload_certificates"})
	if res.Code != 0 || !strings.Contains(res.Stdout, "serial 2a") {
		t.Errorf("ok: %+v", res)
	}
	res = Run(ctx, reloader{Server: b, err: errors.New("tls: certificate open /x.pem: no such file or directory")}, []string{"reload_certificates"})
	if res.Code != ExitSoftware || !strings.Contains(res.Stderr, "/x.pem") {
		t.Errorf("failed reload: %+v", res)
	}
	if res := Run(ctx, b, []string{"reload_certificates"}); res.Code != ExitUnavail || !strings.Contains(res.Stderr, "TLS is not enabled") {
		t.Errorf("no TLS: %+v", res)
	}
}
