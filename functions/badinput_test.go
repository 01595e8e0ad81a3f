package functions_test

// Bad input, every operation: bodies derived from each operation's valid
// bodies and its request schema (malformed JSON, no body, a body over the
// size limit, an unknown wrapper key, every field with a wrong JSON type,
// huge numbers, NUL and control characters in every string), unknown ids
// in every path parameter, bad query parameters. Each answer must be a 4xx
// Trove fault (never a 5xx), and no row may change.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
)

// badCase is one bad request body.
type badCase struct {
	what string
	body []byte // nil: no body at all
	want int    // 0: any 4xx
}

// oversize is more than any operation accepts (Huma's default limit is
// 1 MiB; the operations set less).
const oversize = 2 << 20

func TestBadBodiesEveryOperation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// Room for many instances: a bad body that is wrongly accepted must
	// not hide the next ones behind a quota error.
	if code, body := w.do(t, "PUT", "/v1.0/"+w.projectA+"/mgmt/quotas/"+w.projectA, w.admin,
		`{"quotas": {"instances": 10000, "volumes": 10000}}`); code != 200 {
		t.Fatalf("raise quotas: %d %v", code, body)
	}
	before := w.snapshot(t)
	ops, cases := 0, 0
	for _, op := range specOperations(t) {
		if op.Body == nil {
			continue
		}
		ops++
		token := w.tokenA
		if _, admin := isAdminOp(op); admin {
			token = w.admin
		}
		path := w.path(t, op, w.projectA, nil)
		for _, c := range badBodies(t, op, w.bodies(t, op)) {
			cases++
			r := w.send(t, op.Method, path, token, c.body)
			switch {
			case r.status >= 500 || r.status < 400:
				t.Errorf("%s, %s: %s", op, c.what, r)
			case c.want != 0 && r.status != c.want:
				t.Errorf("%s, %s: %s, want %d", op, c.what, r, c.want)
			default:
				if err := faultProblem(r); err != nil {
					t.Errorf("%s, %s: %v", op, c.what, err)
				}
			}
		}
	}
	t.Logf("%d bad bodies for %d operations", cases, ops)
	w.unchanged(t, before, "bad bodies")
}

// badBodies derives the bad bodies of op from its valid ones.
func badBodies(t *testing.T, op operation, valid []string) []badCase {
	t.Helper()
	cases := []badCase{
		{"malformed JSON", []byte(`{"x": `), 0},
		{"unterminated object", []byte(`{`), 0},
		{"missing colon", []byte(`{"a" 1}`), 0},
		{"trailing garbage", []byte(`{} x`), 0},
		{"an array", []byte(`[]`), 0},
		{"a string", []byte(`"x"`), 0},
		{"a number", []byte(`42`), 0},
		{"a boolean", []byte(`true`), 0},
		{"a body over the size limit", []byte(`{"x": "` + strings.Repeat("a", oversize) + `"}`), http.StatusRequestEntityTooLarge},
	}
	if op.BodyRequired {
		cases = append(cases,
			badCase{"no body", nil, 0}, badCase{"an empty body", []byte{}, 0},
			badCase{"a blank body", []byte("  \n"), 0}, badCase{"null", []byte(`null`), 0})
	}
	root := op.resolve(op.Body)
	for _, v := range valid {
		if v == "" {
			continue
		}
		base := decode(t, []byte(v))
		obj, _ := base.(map[string]any)
		// A wrapped body ({"instance": {...}}) under another name.
		if root != nil && len(root.Properties) == 1 && len(obj) == 1 {
			for key, inner := range obj {
				if root.Properties[key] != nil && slices.Contains(root.Required, key) {
					cases = append(cases, badCase{"unknown wrapper key", encode(t, map[string]any{key + "_x": inner}), 0})
				}
			}
		}
		for _, f := range fields(op, op.Body, base, nil) {
			at := fmt.Sprint(f.path)
			if f.closed {
				if obj, ok := f.value.(map[string]any); ok {
					extra := clone(obj).(map[string]any)
					extra["unknown_x"] = "x"
					var b any = extra
					if len(f.path) > 0 {
						b = setAt(base, f.path, extra)
					}
					cases = append(cases, badCase{fmt.Sprintf("%s with an unknown key (none allowed)", at), encode(t, b), 0})
				}
			}
			if len(f.path) == 0 {
				continue
			}
			if f.key {
				for _, s := range controlStrings(f.value.(string)) {
					cases = append(cases, badCase{fmt.Sprintf("key %s renamed %q", at, s), encode(t, renameKey(base, f.path, s)), 0})
				}
				continue
			}
			for _, bad := range wrongTypes(f) {
				cases = append(cases, badCase{fmt.Sprintf("%s = %s (wrong type)", at, encode(t, bad)), encode(t, setAt(base, f.path, bad)), 0})
			}
			if f.allows("integer") || f.allows("number") || (f.untyped() && kindOf(f.value) == "integer") {
				for _, n := range []string{"1e400", "123456789012345678901234567890", "-123456789012345678901234567890", "9223372036854775808"} {
					cases = append(cases, badCase{fmt.Sprintf("%s = %s (huge)", at, n), encode(t, setAt(base, f.path, json.Number(n))), 0})
				}
				if f.allows("string") {
					const huge = "123456789012345678901234567890"
					cases = append(cases, badCase{fmt.Sprintf("%s = %q (huge)", at, huge), encode(t, setAt(base, f.path, huge)), 0})
				}
			}
			if s, ok := f.value.(string); ok {
				for _, bad := range controlStrings(s) {
					cases = append(cases, badCase{fmt.Sprintf("%s = %q", at, bad), encode(t, setAt(base, f.path, bad)), 0})
				}
			}
		}
	}
	return cases
}

// controlStrings are s with a NUL or another control character.
func controlStrings(s string) []string {
	return []string{s + "\x00", "\x00" + s, s + "\x1b[2J", s + "\n", s + "\r", s + "\t", s + "\x7f", s + "\u0085"}
}

// field is a place in a body: present (with its value) or a property the
// schema declares that the body leaves out.
type field struct {
	path    []any // keys and indexes from the root
	kinds   map[string]bool
	value   any
	present bool
	key     bool // the key of a free-form map (configuration values, quotas)
	closed  bool // an object whose schema allows no other properties
}

func (f field) allows(kind string) bool { return f.kinds[kind] }
func (f field) untyped() bool           { return len(f.kinds) == 0 }

func (op operation) resolve(s *huma.Schema) *huma.Schema {
	for s != nil && s.Ref != "" {
		s = op.reg.SchemaFromRef(s.Ref)
	}
	return s
}

// kinds are the JSON types s allows (none: any).
func (op operation) kinds(s *huma.Schema) map[string]bool {
	s = op.resolve(s)
	k := map[string]bool{}
	if s == nil {
		return k
	}
	if s.Type != "" {
		k[s.Type] = true
	}
	if s.Nullable {
		k["null"] = true
	}
	for _, alt := range append(slices.Clone(s.OneOf), s.AnyOf...) {
		maps.Copy(k, op.kinds(alt))
	}
	if k["number"] {
		k["integer"] = true
	}
	return k
}

// fields lists the places of body v under schema s: everything present,
// and the properties an object present leaves out.
func fields(op operation, s *huma.Schema, v any, path []any) []field {
	s = op.resolve(s)
	closed := s != nil && s.AdditionalProperties == false
	out := []field{{path: path, kinds: op.kinds(s), value: v, present: true, closed: closed}}
	if len(path) == 0 {
		out[0].kinds = nil // the body itself: its cases are the generic ones
	}
	switch x := v.(type) {
	case map[string]any:
		var props map[string]*huma.Schema
		var extra *huma.Schema
		if s != nil {
			props = s.Properties
			extra, _ = s.AdditionalProperties.(*huma.Schema)
		}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			sub := append(slices.Clip(path), k)
			ps := props[k]
			if ps == nil {
				ps = extra
			}
			if len(props) == 0 {
				out = append(out, field{path: sub, value: k, present: true, key: true})
			}
			out = append(out, fields(op, ps, x[k], sub)...)
		}
		for _, k := range slices.Sorted(maps.Keys(props)) {
			if _, ok := x[k]; !ok {
				out = append(out, field{path: append(slices.Clip(path), k), kinds: op.kinds(props[k])})
			}
		}
	case []any:
		var items *huma.Schema
		if s != nil {
			items = s.Items
		}
		for i, it := range x {
			out = append(out, fields(op, items, it, append(slices.Clip(path), i))...)
		}
	}
	return out
}

// wrongTypes are values of the JSON types f does not allow. A field the
// schema leaves untyped (a free-form configuration value or quota) is
// checked against the type of its valid value, with only the types no
// handler could take for it: a string for a number, a list, an object
// (a configuration value may legitimately be a boolean or a float).
func wrongTypes(f field) []any {
	if f.untyped() {
		if !f.present {
			return nil // anything goes (e.g. restorePoint: the handler refuses it, TestCreateInstanceRejectsBadInput)
		}
		var out []any
		for _, c := range []any{"wrong-type", []any{"x"}, map[string]any{"x": "y"}} {
			if kindOf(c) != kindOf(f.value) {
				out = append(out, c)
			}
		}
		return out
	}
	var out []any
	for _, c := range []struct {
		kind  string
		value any
	}{
		{"string", "wrong-type"}, {"integer", json.Number("12345")}, {"number", json.Number("1.5")},
		{"boolean", true}, {"array", []any{"x"}}, {"object", map[string]any{"x": "y"}},
	} {
		if !f.allows(c.kind) {
			out = append(out, c.value)
		}
	}
	return out
}

func kindOf(v any) string {
	switch x := v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		if strings.ContainsAny(x.String(), ".eE") {
			return "number"
		}
		return "integer"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

func decode(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return b
}

// clone deep-copies a decoded body.
func clone(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = clone(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = clone(e)
		}
		return out
	}
	return v
}

// setAt returns a copy of root with the value at path replaced.
func setAt(root any, path []any, val any) any {
	out := clone(root)
	parent, last := walkTo(out, path)
	switch p := parent.(type) {
	case map[string]any:
		p[last.(string)] = val
	case []any:
		p[last.(int)] = val
	}
	return out
}

// renameKey returns a copy of root with the map key at path renamed.
func renameKey(root any, path []any, name string) any {
	out := clone(root)
	parent, last := walkTo(out, path)
	p := parent.(map[string]any)
	p[name] = p[last.(string)]
	delete(p, last.(string))
	return out
}

func walkTo(root any, path []any) (parent, last any) {
	cur := root
	for _, step := range path[:len(path)-1] {
		switch s := step.(type) {
		case string:
			cur = cur.(map[string]any)[s]
		case int:
			cur = cur.([]any)[s]
		}
	}
	return cur, path[len(path)-1]
}

// TestUnknownIDsEveryOperation puts ids that exist nowhere (and malformed
// or overlong ones) in each path parameter of every operation, with the
// caller entitled to the real ones: Trove's 404 for instances,
// configuration groups, users and databases, a 4xx for catalog entries
// (Trove answers an unknown datastore version with 400), and no change.
func TestUnknownIDsEveryOperation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	before := w.snapshot(t)
	calls := 0
	for _, op := range specOperations(t) {
		token := w.tokenA
		if _, admin := isAdminOp(op); admin {
			token = w.admin
		}
		body := bodyBytes(w.bodies(t, op)[0])
		for _, p := range op.params() {
			if p == "tenant_id" {
				continue
			}
			kind := pathParams[p].kind
			var values []string
			switch kind {
			case owned:
				values = []string{uuid.NewString(), "not-a-uuid", strings.Repeat("a", 300)}
			case child:
				values = []string{"nosuch", "bad name;", strings.Repeat("a", 500)}
			case catalog:
				values = []string{"nosuch", uuid.NewString(), "bad name;", strings.Repeat("a", 300)}
			case project:
				continue // any project id has quotas (the defaults)
			}
			for _, v := range values {
				calls++
				r := w.send(t, op.Method, w.path(t, op, w.projectA, map[string]string{p: v}), token, body)
				what := fmt.Sprintf("%s with {%s} = %.20q", op, p, v)
				if want, ok := successCodes[op.ID]; ok && kind != owned && r.status == want {
					continue // Trove's answer whatever the name (show-database: 501)
				}
				switch {
				case r.status < 400 || r.status >= 500:
					t.Errorf("%s: %s", what, r)
					continue
				case kind == owned && len(v) < 100 && r.status != http.StatusNotFound:
					t.Errorf("%s: %s, want 404", what, r)
				case kind == child && v == "nosuch" && op.ID != "show-database" && r.status != http.StatusNotFound:
					t.Errorf("%s: %s, want 404", what, r)
				}
				if err := faultProblem(r); err != nil {
					t.Errorf("%s: %v", what, err)
				}
			}
		}
	}
	t.Logf("%d calls with unknown ids", calls)
	w.unchanged(t, before, "calls with unknown ids")
}

// TestBadQueryEveryOperation sends bad query parameters to every operation
// that takes some: integers that are no integers, negative or huge (400),
// and strings with NUL or of great length (no 5xx).
func TestBadQueryEveryOperation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	before := w.snapshot(t)
	calls := 0
	for _, op := range specOperations(t) {
		token := w.tokenA
		if _, admin := isAdminOp(op); admin {
			token = w.admin
		}
		for _, p := range op.Query {
			var values []string
			integer := op.kinds(p.Schema)["integer"]
			if integer {
				values = []string{"abc", "-1", "1.5", "99999999999999999999", ""}
			} else {
				values = []string{"\x00", "a\x00b", "\x1b", strings.Repeat("z", 5000)}
			}
			for _, v := range values {
				calls++
				path := w.path(t, op, w.projectA, nil) + "?" + url.Values{p.Name: {v}}.Encode()
				r := w.send(t, op.Method, path, token, bodyBytes(w.bodies(t, op)[0]))
				what := fmt.Sprintf("%s?%s=%.20q", op, p.Name, v)
				switch {
				case r.status >= 500:
					t.Errorf("%s: %s", what, r)
				case integer && v != "" && r.status != http.StatusBadRequest:
					t.Errorf("%s: %s, want 400", what, r)
				case r.status >= 400:
					if err := faultProblem(r); err != nil {
						t.Errorf("%s: %v", what, err)
					}
				}
			}
		}
	}
	if calls == 0 {
		t.Fatal("no operation has query parameters")
	}
	t.Logf("%d calls with bad query parameters", calls)
	w.unchanged(t, before, "calls with bad query parameters")
}

// TestCreateInstanceRefusesWhatAccountsRefuse: the databases and users of
// an instance create reach the guest's prepare, which refuses what the
// databases and users routes refuse; the create must refuse them too (400)
// rather than leave an instance that fails to build.
func TestCreateInstanceRefusesWhatAccountsRefuse(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := "/v1.0/" + w.projectA
	before := w.snapshot(t)
	databases := []string{
		`{"name": "template1"}`, `{"name": "os_admin"}`, `{"name": "9lives"}`,
		`{"name": "shop", "character_set": "klingon"}`, `{"name": "shop", "collate": "C; DROP"}`,
	}
	users := []string{
		`{"name": "pg_app", "password": "pw"}`, `{"name": "public", "password": "pw"}`, `{"name": "current_user", "password": "pw"}`,
		`{"name": "app", "password": "pw", "host": "10.0.0.1"}`,
	}
	check := func(what, method, path, body string) {
		t.Helper()
		r := w.send(t, method, path, w.tokenA, []byte(body))
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: %s, want 400", what, r)
		} else if err := faultProblem(r); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	create := func(extra string) string {
		return `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, ` + extra + `}}`
	}
	for _, db := range databases {
		check("create databases "+db, "POST", a+"/instances/"+w.instance+"/databases", `{"databases": [`+db+`]}`)
		check("create instance with database "+db, "POST", a+"/instances", create(`"databases": [`+db+`]`))
	}
	for _, u := range users {
		check("create users "+u, "POST", a+"/instances/"+w.instance+"/users", `{"users": [`+u+`]}`)
		check("create instance with user "+u, "POST", a+"/instances", create(`"users": [`+u+`]`))
	}
	w.unchanged(t, before, "refused creates")
}
