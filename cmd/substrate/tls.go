package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"substrate/broker"
	"substrate/internal/preflight"
	"substrate/internal/tlsutil"
)

// The TLS ports' defaults (RabbitMQ's AMQPS and management HTTPS ports).
const (
	defaultAMQPSPort = 5671
	defaultHTTPSPort = 15671
)

// loadTLS loads --tls-cert, --tls-key and --tls-ca (nil without
// --tls-cert). A file that cannot be loaded is an error naming it, which
// stops serve before anything binds.
func loadTLS(f serveFlags, log *slog.Logger) (*tlsutil.Store, error) {
	if f.tlsCert == "" && f.tlsKey == "" {
		// Without a certificate nothing listens on TLS: a TLS option
		// that was changed would be silently ignored, so it is refused.
		switch {
		case f.tlsCA != "":
			return nil, fmt.Errorf("--tls-ca needs --tls-cert and --tls-key")
		case f.tlsClientAuth != "" && f.tlsClientAuth != "none":
			return nil, fmt.Errorf("--tls-client-auth %s needs --tls-cert and --tls-key", f.tlsClientAuth)
		case f.amqpsPort != 0 && f.amqpsPort != defaultAMQPSPort:
			return nil, fmt.Errorf("--amqps-port %d needs --tls-cert and --tls-key", f.amqpsPort)
		case f.httpsPort != 0 && f.httpsPort != defaultHTTPSPort:
			return nil, fmt.Errorf("--https-port %d needs --tls-cert and --tls-key", f.httpsPort)
		}
		return nil, nil
	}
	if f.tlsCert == "" || f.tlsKey == "" {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	auth, err := tlsutil.ParseClientAuth(f.tlsClientAuth)
	if err != nil {
		return nil, fmt.Errorf("--tls-client-auth: %w", err)
	}
	if auth != 0 && f.tlsCA == "" {
		return nil, fmt.Errorf("--tls-client-auth %s needs --tls-ca (the CA client certificates must chain to)", f.tlsClientAuth)
	}
	store, err := tlsutil.New(tlsutil.Config{CertFile: f.tlsCert, KeyFile: f.tlsKey, CAFile: f.tlsCA, ClientAuth: auth})
	if err != nil {
		return nil, err
	}
	if w := preflight.SecretFile("TLS key", f.tlsKey); w != "" {
		log.Warn(w)
	}
	warnExpiry(store.Info(), log)
	return store, nil
}

func warnExpiry(info tlsutil.Info, log *slog.Logger) {
	switch left := time.Until(info.NotAfter); {
	case left <= 0:
		log.Warn("the TLS certificate has expired: clients will refuse it", "certificate", info.String())
	case left < 30*24*time.Hour:
		log.Warn("the TLS certificate expires in less than 30 days", "certificate", info.String())
	}
}

// reloadTLS re-reads the certificate files: on success new handshakes
// (AMQPS and HTTPS) use them; on failure the certificate in use stays.
func reloadTLS(store *tlsutil.Store, log *slog.Logger, why string) (tlsutil.Info, error) {
	info, err := store.Reload()
	if err != nil {
		log.Error("TLS certificate reload failed; the previous certificate stays in use", "trigger", why, "err", err)
		return info, err
	}
	log.Info("TLS certificates reloaded", "trigger", why, "certificate", info.String())
	warnExpiry(info, log)
	return info, nil
}

// watchSIGHUP reloads the certificates on each SIGHUP until the returned
// func is called. Without TLS, SIGHUP is logged and ignored (rather than
// ending the process, its default).
func watchSIGHUP(store *tlsutil.Store, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-hup:
				if store == nil {
					log.Info("SIGHUP: no TLS certificates to reload (no --tls-cert)")
					continue
				}
				reloadTLS(store, log, "SIGHUP")
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-exited
	}
}

// ctlBroker is the broker as `substrate ctl` sees it, with
// reload_certificates (internal/ctl.CertReloader).
type ctlBroker struct {
	*broker.Server
	store *tlsutil.Store
	log   *slog.Logger
}

// ReloadCertificates implements ctl.CertReloader.
func (b ctlBroker) ReloadCertificates() (string, error) {
	if b.store == nil {
		return "", fmt.Errorf("TLS is not enabled (serve has no --tls-cert)")
	}
	info, err := reloadTLS(b.store, b.log, "ctl")
	if err != nil {
		return "", err
	}
	return "Certificate in use: " + info.String(), nil
}
