package preflight

import (
	"fmt"
	"os"
)

// DirPermission returns a warning, as etcd (fileutil.CheckDirPermission)
// words it, when the existing directory dir is open to group or others;
// "" when it is private or missing. Like etcd, substrate warns and goes
// on rather than changing or refusing an operator's directory.
func DirPermission(dir string) string {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("check file permission: directory %q exist, but the permission is %q. The recommended permission is \"-rwx------\" to prevent possible unprivileged access to the data", dir, fi.Mode().String())
}

// SecretFile returns a warning when file, a password file or a private
// key named by what, can be read by group or others; "" otherwise (a
// missing file is reported by whoever reads it).
func SecretFile(what, file string) string {
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s %s is accessible to group or others (mode %s); it holds secrets: chmod 600 it", what, file, fi.Mode().Perm())
}
