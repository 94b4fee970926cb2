package cache

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"fmt"
	"os"
)

// saslMechs is the SASL_LIST_MECHS answer: PLAIN is the only mechanism.
const saslMechs = "PLAIN"

// maxPwdbLine is memcached's MAX_ENTRY_LEN: longer lines are refused.
const maxPwdbLine = 255

// credentials is the parsed password file: user → password.
type credentials map[string][]byte

// loadPasswordFile reads a memcached MEMCACHED_SASL_PWDB file: one
// "user:password" per line; text after a further ':' is ignored, as in
// memcached. Blank lines are skipped; anything else without a ':' or with
// an empty user is an error naming file:line. The first line for a user
// wins.
func loadPasswordFile(path string) (credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cache: SASL password file: %w", err)
	}
	creds := credentials{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if len(line) > maxPwdbLine {
			return nil, fmt.Errorf("cache: %s:%d: line longer than %d bytes", path, n, maxPwdbLine)
		}
		user, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, fmt.Errorf("cache: %s:%d: want user:password", path, n)
		}
		if len(user) == 0 {
			return nil, fmt.Errorf("cache: %s:%d: empty user name", path, n)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return nil, fmt.Errorf("cache: %s:%d: NUL byte", path, n)
		}
		pass, _, _ := bytes.Cut(rest, []byte(":"))
		if _, dup := creds[string(user)]; !dup {
			creds[string(user)] = bytes.Clone(pass)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cache: SASL password file %s: %w", path, err)
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("cache: SASL password file %s: no users", path)
	}
	return creds, nil
}

// checkPlain verifies a SASL PLAIN message against the password file,
// read afresh for every login as memcached reads MEMCACHED_SASL_PWDB: a
// user added to the file can log in at once, a removed one no longer can.
// A file that has become unreadable or malformed refuses every login (and
// says why in the log, rate-limited).
func (s *Server) checkPlain(msg []byte) bool {
	creds, err := loadPasswordFile(s.cfg.SASLPasswordFile)
	if err != nil {
		if s.warnOK("sasl") {
			s.log.Warn("cache: SASL login refused", "err", err)
		}
		return false
	}
	return creds.checkPlain(msg)
}

// checkPlain verifies a SASL PLAIN message "authzid\0authcid\0passwd".
// An authorization identity other than the user itself is refused, as
// Cyrus SASL does without an authorization policy.
func (c credentials) checkPlain(msg []byte) bool {
	authz, rest, ok := bytes.Cut(msg, []byte{0})
	if !ok {
		return false
	}
	user, pass, ok := bytes.Cut(rest, []byte{0})
	if !ok || len(user) == 0 {
		return false
	}
	if len(authz) > 0 && !bytes.Equal(authz, user) {
		return false
	}
	want, found := c[string(user)]
	if !found {
		// Compare anyway so a missing user costs the same.
		subtle.ConstantTimeCompare(pass, pass)
		return false
	}
	return subtle.ConstantTimeCompare(want, pass) == 1
}
