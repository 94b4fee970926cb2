package broker

import (
	"crypto/sha256"
	"testing"
)

func TestPasswordHashIsRabbitMQs(t *testing.T) {
	u := User{Name: "openstack", PasswordHash: HashPassword("RABBIT_PASS")}
	if !u.CheckPassword("RABBIT_PASS") || u.CheckPassword("rabbit_pass") || u.CheckPassword("") {
		t.Fatal("CheckPassword accepts the wrong password or refuses the right one")
	}
	if len(u.PasswordHash) != 36 {
		t.Fatalf("hash is %d bytes, want 4 salt + 32", len(u.PasswordHash))
	}
	// Same layout as rabbit_password_hashing_sha256: salt ++ sha256(salt ++ pw).
	sum := sha256.Sum256(append(append([]byte(nil), u.PasswordHash[:4]...), "RABBIT_PASS"...))
	if string(u.PasswordHash[4:]) != string(sum[:]) {
		t.Fatal("hash layout differs from RabbitMQ's")
	}
	if (User{}).CheckPassword("") {
		t.Fatal("a user without a hash logged in")
	}
	if string(HashPassword("x")) == string(HashPassword("x")) {
		t.Fatal("hashes are not salted")
	}
}
