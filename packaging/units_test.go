package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitsVerify runs systemd-analyze verify on every unit in systemd/,
// with ExecStart pointed at an executable that exists (verify refuses a
// missing binary), and fails on any warning it prints.
func TestUnitsVerify(t *testing.T) {
	need(t, "systemd-analyze")
	units, _ := filepath.Glob(filepath.Join(repoRoot(t), "systemd", "*.service"))
	if len(units) < 6 {
		t.Fatalf("found %d units in systemd/, want at least 6", len(units))
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, want := range []string{"Type=notify", "LimitNOFILE=", "Restart=on-failure", "NoNewPrivileges=true",
			"ProtectSystem=strict", "ProtectHome=true", "PrivateTmp=true", "ReadWritePaths=/var/lib/imgate",
			"CapabilityBoundingSet=", "ExecReload=/bin/kill -HUP $MAINPID"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %s", filepath.Base(u), want)
			}
		}
		p := filepath.Join(dir, filepath.Base(u))
		os.WriteFile(p, []byte(strings.ReplaceAll(text, "/usr/bin/imgate", self)), 0o644)
		paths = append(paths, p)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
