// Command mkpkg builds substrate's .deb and .rpm from packaging/nfpm.yaml
// with nfpm (github.com/goreleaser/nfpm/v2) used as a library: `make
// packages` runs it from the repository's top directory after `make
// build`. It is its own module so that nfpm's dependencies stay out of
// substrate's go.mod.
//
//	mkpkg -version 0.1.123 -arch amd64 -out dist
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb"
	_ "github.com/goreleaser/nfpm/v2/rpm"
)

func main() {
	config := flag.String("config", "packaging/nfpm.yaml", "nfpm `file`")
	version := flag.String("version", "", "package `version`, digits and dots (e.g. 0.1.123)")
	arch := flag.String("arch", runtime.GOARCH, "Go `architecture` of bin/substrate")
	out := flag.String("out", "dist", "output `directory`")
	flag.Parse()
	if err := build(*config, *version, *arch, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "mkpkg:", err)
		os.Exit(1)
	}
}

var versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

func build(configPath, version, arch, out string, formats []string) error {
	if !versionRE.MatchString(version) {
		return fmt.Errorf("-version %q: want digits and dots, as both dpkg and rpm order them", version)
	}
	if len(formats) == 0 {
		formats = []string{"deb", "rpm"}
	}
	vars := map[string]string{"VERSION": version, "ARCH": arch}
	cfg, err := nfpm.ParseFileWithEnvMapping(configPath, func(k string) string { return vars[k] })
	if err != nil {
		return fmt.Errorf("%s: %w", configPath, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", configPath, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, format := range formats {
		if err := pack(cfg, format, out); err != nil {
			return fmt.Errorf("%s: %w", format, err)
		}
	}
	return nil
}

func pack(cfg nfpm.Config, format, out string) error {
	info, err := cfg.Get(format)
	if err != nil {
		return err
	}
	info = nfpm.WithDefaults(info)
	pkg, err := nfpm.Get(format)
	if err != nil {
		return err
	}
	target := filepath.Join(out, pkg.ConventionalFileName(info))
	f, err := os.Create(target)
	if err != nil {
		return err
	}
	info.Target = target
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(target)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(target)
	return nil
}
