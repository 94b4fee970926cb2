package benchkit

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Errs counts a load's failures by kind, keeping the first message of
// each kind for the report. The zero value is ready; safe for concurrent
// use.
type Errs struct {
	mu    sync.Mutex
	m     map[string]int64
	first map[string]string
}

// Add counts one failure of kind (err may be nil).
func (e *Errs) Add(kind string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m, e.first = map[string]int64{}, map[string]string{}
	}
	e.m[kind]++
	if _, ok := e.first[kind]; !ok && err != nil {
		e.first[kind] = err.Error()
	}
}

// Total returns the failures of every kind.
func (e *Errs) Total() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for _, v := range e.m {
		n += v
	}
	return n
}

// String lists the kinds in order: "kind N (first: message); ...".
func (e *Errs) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	kinds := make([]string, 0, len(e.m))
	for k := range e.m {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	s := make([]string, 0, len(kinds))
	for _, k := range kinds {
		x := fmt.Sprintf("%s %d", k, e.m[k])
		if f := e.first[k]; f != "" {
			x += " (first: " + f + ")"
		}
		s = append(s, x)
	}
	return strings.Join(s, "; ")
}
