package mgmtapi

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// list answers a list as rabbit_mgmt_util:reply_list does: sorted
// (sort=key, sort_reverse=true; default by vhost then name), filtered to
// the requested columns (columns=a,b.c), and paginated when page= is
// given (page_size, name, use_regex), as rabbitmqadmin and the UI ask.
func (a *API) list(w http.ResponseWriter, rq *request, items []obj) {
	if items == nil {
		items = []obj{}
	}
	p := rq.params
	keys := []string{"vhost", "name"}
	if s := p.Get("sort"); s != "" {
		keys = []string{s}
	}
	sort.SliceStable(items, func(i, j int) bool {
		for _, k := range keys {
			c := compare(lookup(items[i], k), lookup(items[j], k))
			if c != 0 {
				return c < 0
			}
		}
		return false
	})
	if p.Get("sort_reverse") == "true" {
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	}
	if !p.Has("page") {
		writeJSON(w, http.StatusOK, columns(items, p.Get("columns")))
		return
	}
	page, err1 := strconv.Atoi(p.Get("page"))
	size := 100
	var err2 error
	if s := p.Get("page_size"); s != "" {
		size, err2 = strconv.Atoi(s)
	}
	if err1 != nil || err2 != nil || page < 1 || size < 1 || size > 500 {
		badRequest(w, "Invalid pagination parameters")
		return
	}
	total := len(items)
	if name := p.Get("name"); name != "" {
		match := func(s string) bool { return strings.Contains(s, name) }
		if p.Get("use_regex") == "true" {
			re, err := regexp.Compile(name)
			if err != nil {
				badRequest(w, fmt.Sprintf("Invalid regex: %v", err))
				return
			}
			match = re.MatchString
		}
		var kept []obj
		for _, it := range items {
			if n, _ := it["name"].(string); match(n) {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	filtered := len(items)
	pages := (filtered + size - 1) / size
	if page > pages && filtered > 0 {
		badRequest(w, "Page out of range")
		return
	}
	lo, hi := min((page-1)*size, filtered), min(page*size, filtered)
	pageItems := columns(items[lo:hi], p.Get("columns"))
	writeJSON(w, http.StatusOK, obj{
		"filtered_count": filtered, "item_count": hi - lo, "items": pageItems,
		"page": page, "page_count": pages, "page_size": size, "total_count": total,
	})
}

// one answers a single object, filtered to columns= when given.
func (a *API) one(w http.ResponseWriter, rq *request, o obj) {
	if c := rq.params.Get("columns"); c != "" {
		o = pick(o, strings.Split(c, ","))
	}
	writeJSON(w, http.StatusOK, o)
}

func columns(items []obj, cols string) []obj {
	if items == nil {
		items = []obj{}
	}
	if cols == "" {
		return items
	}
	names := strings.Split(cols, ",")
	out := make([]obj, len(items))
	for i, it := range items {
		out[i] = pick(it, names)
	}
	return out
}

// pick keeps the named keys of o ("a.b" keeps b inside a), as
// rabbit_mgmt_util:columns does.
func pick(o obj, names []string) obj {
	out := obj{}
	for _, n := range names {
		path := strings.Split(n, ".")
		src, dst := o, out
		for i, k := range path {
			v, ok := src[k]
			if !ok {
				break
			}
			if i == len(path)-1 {
				dst[k] = v
				break
			}
			sub, ok := v.(obj)
			if !ok {
				dst[k] = v
				break
			}
			next, _ := dst[k].(obj)
			if next == nil {
				next = obj{}
				dst[k] = next
			}
			src, dst = sub, next
		}
	}
	return out
}

func lookup(o obj, path string) any {
	var v any = o
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(obj)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func compare(x, y any) int {
	fx, okx := number(x)
	fy, oky := number(y)
	if okx && oky {
		switch {
		case fx < fy:
			return -1
		case fx > fy:
			return 1
		}
		return 0
	}
	return strings.Compare(fmt.Sprint(x), fmt.Sprint(y))
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}
