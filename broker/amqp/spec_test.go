package amqp

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

const specPath = "internal/gen/amqp-rabbitmq-0.9.1.json"

// TestSpecAgainstJSON checks the generated code against the spec JSON
// independently of the generator: ids, names, content and synchronous
// flags, argument count, order and Go types.
func TestSpecAgainstJSON(t *testing.T) {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var sp struct {
		Domains [][]string `json:"domains"`
		Classes []struct {
			ID      uint16 `json:"id"`
			Name    string `json:"name"`
			Methods []struct {
				ID          uint16 `json:"id"`
				Name        string `json:"name"`
				Synchronous bool   `json:"synchronous"`
				Content     bool   `json:"content"`
				Arguments   []struct {
					Name, Type, Domain string
				} `json:"arguments"`
			} `json:"methods"`
		} `json:"classes"`
	}
	if err := json.Unmarshal(raw, &sp); err != nil {
		t.Fatal(err)
	}
	domains := map[string]string{}
	for _, d := range sp.Domains {
		domains[d[0]] = d[1]
	}
	goType := map[string]reflect.Type{
		"octet": reflect.TypeFor[uint8](), "short": reflect.TypeFor[uint16](), "long": reflect.TypeFor[uint32](),
		"longlong": reflect.TypeFor[uint64](), "bit": reflect.TypeFor[bool](), "shortstr": reflect.TypeFor[string](),
		"longstr": reflect.TypeFor[string](), "table": reflect.TypeFor[Table](), "timestamp": reflect.TypeFor[uint64](),
	}
	n := 0
	for _, c := range sp.Classes {
		for _, m := range c.Methods {
			n++
			full := c.Name + "." + m.Name
			meth := NewMethod(c.ID, m.ID)
			if meth == nil {
				t.Errorf("%s (%d,%d) missing", full, c.ID, m.ID)
				continue
			}
			if meth.Name() != full || meth.ClassID() != c.ID || meth.MethodID() != m.ID ||
				meth.HasContent() != m.Content || meth.Synchronous() != m.Synchronous ||
				hasContent(c.ID, m.ID) != m.Content {
				t.Errorf("%s: generated %s (%d,%d) content=%v sync=%v", full, meth.Name(), meth.ClassID(),
					meth.MethodID(), meth.HasContent(), meth.Synchronous())
			}
			st := reflect.TypeOf(meth).Elem()
			if st.NumField() != len(m.Arguments) {
				t.Errorf("%s: %d fields, spec has %d arguments", full, st.NumField(), len(m.Arguments))
				continue
			}
			for i, a := range m.Arguments {
				typ := a.Type
				if typ == "" {
					typ = domains[a.Domain]
				}
				if st.Field(i).Type != goType[typ] {
					t.Errorf("%s.%s: field %s is %v, want %s", full, a.Name, st.Field(i).Name, st.Field(i).Type, typ)
				}
			}
		}
	}
	if n != len(allMethods()) {
		t.Errorf("spec has %d methods, generated %d", n, len(allMethods()))
	}
}

// TestGeneratedUpToDate regenerates spec_gen.go into a temporary file and
// compares. It needs the go tool and compiles the generator, so it is
// skipped with -short.
func TestGeneratedUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the generator")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out := filepath.Join(t.TempDir(), "spec_gen.go")
	cmd := exec.Command(goTool, "run", "./internal/gen", "-spec", specPath, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generator: %v\n%s", err, b)
	}
	want, _ := os.ReadFile(out)
	got, err := os.ReadFile("spec_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("spec_gen.go is stale: run go generate ./broker/amqp")
	}
}
