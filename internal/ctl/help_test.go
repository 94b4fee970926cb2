package ctl

import (
	"context"
	"regexp"
	"testing"
)

// TestHelpReferencesWork: every "'rabbitmqctl help X'" (or
// rabbitmq-diagnostics') that substrate prints, in its help listing, its
// help pages or a command's output, names a command whose help page it
// prints (exit code 0).
func TestHelpReferencesWork(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	ref := regexp.MustCompile(`'(rabbitmqctl|rabbitmq-diagnostics) help ([a-z_]+)'`)
	var texts []string
	for _, tool := range []string{ToolCtl, ToolDiag} {
		texts = append(texts, Exec(ctx, b, nil, Request{Tool: tool, Argv: []string{"help"}}).Stdout)
		for name := range helpData {
			if toolHas(tool, name) {
				texts = append(texts, Exec(ctx, b, nil, Request{Tool: tool, Argv: []string{"help", name}}).Stdout)
			}
		}
	}
	texts = append(texts, Exec(ctx, b, nil, Request{Tool: ToolCtl, Argv: []string{"add_user", "someone", "pw"}}).Stdout)
	found := 0
	for _, text := range texts {
		for _, m := range ref.FindAllStringSubmatch(text, -1) {
			found++
			res := Exec(ctx, b, nil, Request{Tool: m[1], Argv: []string{"help", m[2]}})
			if res.Code != 0 || res.Stdout == "" {
				t.Errorf("%s: exit code %d, stderr %q", m[0], res.Code, res.Stderr)
			}
		}
	}
	if found == 0 {
		t.Fatal("no help references found: the pattern is wrong")
	}
}
