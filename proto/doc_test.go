package proto

import (
	"flag"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var updateDoc = flag.Bool("update-doc", false, "rewrite the example blocks of docs/PROTOCOL.md from example_test.go")

// docBlock matches a marker naming an example and the fenced block after it.
var docBlock = regexp.MustCompile("(?s)<!-- go:(Example\\w*) -->\n```text\n(.*?)```\n")

// TestProtocolDoc checks that every hex dump in docs/PROTOCOL.md is the
// verbatim output of the example that the block's marker names, so the spec
// cannot drift from the encoder. With -update-doc it rewrites the blocks.
func TestProtocolDoc(t *testing.T) {
	path := filepath.Join("..", "docs", "PROTOCOL.md")
	text, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no spec to check: %v", err)
	}
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "example_test.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{}
	for _, ex := range doc.Examples([]*ast.File{file}...) {
		outputs["Example"+name(ex)] = ex.Output
	}

	used := map[string]bool{}
	var missing []string
	updated := docBlock.ReplaceAllStringFunc(string(text), func(block string) string {
		m := docBlock.FindStringSubmatch(block)
		out, ok := outputs[m[1]]
		if !ok {
			missing = append(missing, m[1])
			return block
		}
		used[m[1]] = true
		if m[2] != out {
			if !*updateDoc {
				t.Errorf("%s: the block after <!-- go:%s --> is not that example's output (run go test ./proto -run TestProtocolDoc -update-doc)", path, m[1])
			}
			return strings.Replace(block, "```text\n"+m[2], "```text\n"+out, 1)
		}
		return block
	})
	for _, m := range missing {
		t.Errorf("%s names %s, which example_test.go does not define", path, m)
	}
	for ex := range outputs {
		if !used[ex] {
			t.Errorf("%s shows no block for %s", path, ex)
		}
	}
	if *updateDoc && updated != string(text) {
		if err := os.WriteFile(path, []byte(updated), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// codeRow matches a row of the §6 table: code, name, fatal.
var codeRow = regexp.MustCompile("(?m)^\\| *(\\d+) *\\| *`([A-Z_]+)` *\\| *(yes|no) *\\|")

// TestProtocolDocCodes checks the §6 table of docs/PROTOCOL.md against
// code.go: every code is listed once, with its name and fatality.
func TestProtocolDocCodes(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("..", "docs", "PROTOCOL.md"))
	if err != nil {
		t.Skipf("no spec to check: %v", err)
	}
	seen := map[Code]bool{}
	for _, m := range codeRow.FindAllStringSubmatch(string(text), -1) {
		n, _ := strconv.Atoi(m[1])
		c := Code(n)
		if seen[c] {
			t.Errorf("code %d is listed twice", n)
		}
		seen[c] = true
		if c.String() != m[2] {
			t.Errorf("code %d is %s in the spec, %s in code.go", n, m[2], c)
		}
		if c.Fatal() != (m[3] == "yes") {
			t.Errorf("code %d (%s): the spec says fatal %s, code.go says %v", n, m[2], m[3], c.Fatal())
		}
	}
	for c := range codeNames {
		if !seen[c] {
			t.Errorf("code %d (%s) is missing from the spec's table", uint16(c), c)
		}
	}
}

// name is an example's name as doc.Examples reports it: "" for Example,
// "_suffix" for Example_suffix.
func name(ex *doc.Example) string {
	if ex.Suffix == "" {
		return ex.Name
	}
	if ex.Name == "" {
		return "_" + ex.Suffix
	}
	return ex.Name + "_" + ex.Suffix
}
