package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot is where the Makefile is.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: skipping (it comes with the %s package)", tool, map[string]string{"systemd-analyze": "systemd", "make": "make", "dpkg-deb": "dpkg"}[tool])
		}
	}
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// wantFiles is what the package must install, relative to /.
var wantFiles = []string{
	"usr/bin/imgate",
	"usr/bin/imgate-cli",
	"etc/imgate/imgate.toml",
	"etc/sysctl.d/90-imgate.conf",
	"etc/security/limits.d/imgate.conf",
	"usr/lib/systemd/system/imgate.service",
	"usr/lib/systemd/system/imgate-gateway.service",
	"usr/lib/systemd/system/imgate-route.service",
	"usr/lib/systemd/system/imgate-push.service",
	"usr/lib/systemd/system/imgate-store.service",
	"usr/lib/systemd/system/imgate-dns.service",
	"usr/share/doc/imgate/README.md",
	"usr/share/doc/imgate/imgate.example.toml",
	"var/lib/imgate",
}

// TestDeb builds the .deb with `make deb`, reads its control data and
// contents, extracts it into a throwaway root, and unpacks it there with
// dpkg --root as a second, real installation (no maintainer scripts run:
// they would act on this host's users).
func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: make deb builds two static binaries")
	}
	need(t, "make", "dpkg-deb")
	out := t.TempDir()
	run(t, repoRoot(t), "make", "--no-print-directory", "deb", "DEBOUT="+out, "DEBROOT="+filepath.Join(out, "root"))
	debs, _ := filepath.Glob(filepath.Join(out, "imgate_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v, want one imgate_*.deb", debs)
	}
	deb := debs[0]

	info := run(t, out, "dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: imgate", "Depends: adduser", "postinst", "prerm", "postrm", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	if v := run(t, out, "dpkg-deb", "--field", deb, "Version"); !strings.ContainsAny(v[:1], "0123456789") {
		t.Errorf("Version %q does not start with a digit", v)
	}
	contents := run(t, out, "dpkg-deb", "--contents", deb)
	for _, f := range wantFiles {
		if !strings.Contains(contents, "./"+f) {
			t.Errorf("package lacks /%s", f)
		}
	}

	// The maintainer scripts must at least parse, and do what they promise.
	ctl := filepath.Join(out, "control")
	run(t, out, "dpkg-deb", "--control", deb, ctl)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		run(t, out, "sh", "-n", filepath.Join(ctl, s))
	}
	postinst, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
	for _, want := range []string{"adduser --system", "/var/lib/imgate", "systemctl daemon-reload", "/run/systemd/system"} {
		if !strings.Contains(string(postinst), want) {
			t.Errorf("postinst lacks %q", want)
		}
	}
	for _, line := range strings.Split(string(postinst), "\n") {
		if line = strings.TrimSpace(line); !strings.HasPrefix(line, "#") &&
			(strings.Contains(line, "systemctl enable") || strings.Contains(line, "systemctl start")) {
			t.Errorf("postinst must not enable or start the service: %s", line)
		}
	}

	x := filepath.Join(out, "x")
	run(t, out, "dpkg-deb", "-x", deb, x)
	checkTree(t, x, "/usr", "")

	if os.Geteuid() != 0 {
		t.Log("not root: skipping dpkg --root --unpack")
		return
	}
	root := filepath.Join(out, "dpkgroot")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644)
	run(t, out, "dpkg", "--root="+root, "--force-depends", "--unpack", deb)
	// Until configure, dpkg leaves a conffile as NAME.dpkg-new.
	checkTree(t, root, "/usr", ".dpkg-new")
	if st := run(t, out, "dpkg", "--root="+root, "-s", "imgate"); !strings.Contains(st, "Status: install ok unpacked") {
		t.Errorf("dpkg -s after unpack:\n%s", st)
	}
}

// checkTree checks an installed tree: files present, units pointing at the
// installed binary, the default config commented and valid.
func checkTree(t *testing.T, root, prefix, confSuffix string) {
	t.Helper()
	for _, f := range wantFiles {
		if f == "etc/imgate/imgate.toml" {
			f += confSuffix
		}
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed tree: %v", err)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/imgate.service"))
	if !strings.Contains(string(unit), "ExecStart="+prefix+"/bin/imgate all") {
		t.Errorf("imgate.service does not start %s/bin/imgate:\n%s", prefix, unit)
	}
	confPath := filepath.Join(root, "etc/imgate/imgate.toml"+confSuffix)
	conf, _ := os.ReadFile(confPath)
	if !strings.Contains(string(conf), "\n# ") || !strings.Contains(string(conf), `data_dir = "/var/lib/imgate"`) {
		t.Errorf("installed imgate.toml is not the commented default with data_dir /var/lib/imgate")
	}
	bin := filepath.Join(root, "usr/bin/imgate")
	if out, err := exec.Command(bin, "config", "check", confPath).CombinedOutput(); err != nil {
		t.Errorf("imgate config check on the installed config: %v\n%s", err, out)
	}
}

// TestInstallKeepsConfig runs make install into a DESTDIR twice: the second
// run must keep an edited config.
func TestInstallKeepsConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: make install builds two static binaries")
	}
	need(t, "make")
	dest := t.TempDir()
	install := func() {
		run(t, repoRoot(t), "make", "--no-print-directory", "install", "DESTDIR="+dest)
	}
	install()
	conf := filepath.Join(dest, "etc/imgate/imgate.toml")
	for _, f := range []string{"usr/local/bin/imgate", "usr/local/bin/imgate-cli", "etc/systemd/system/imgate.service", "etc/sysctl.d/90-imgate.conf", "var/lib/imgate"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/imgate.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/imgate all") {
		t.Errorf("make install did not point the unit at /usr/local/bin:\n%s", unit)
	}
	if err := os.WriteFile(conf, []byte("# edited\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	install()
	if b, _ := os.ReadFile(conf); string(b) != "# edited\n" {
		t.Errorf("make install overwrote an existing config: %q", b)
	}
}
