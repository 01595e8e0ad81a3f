package functions

// Guards every request passes: text checks of request bodies, and panic
// recovery.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"runtime/debug"
	"strings"
	"unicode"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/openapi"
)

// No string in a request body may hold a control character (NUL, line
// breaks, tabs, escape sequences, DEL, C1 controls): PostgreSQL cannot
// store NUL in text or jsonb (the insert fails, a 500), a name or
// description with escape sequences rewrites the terminal of whoever lists
// it, and a newline in a datastore setting or identifier is an injection.
// One check, in the JSON format that decodes every body, covers every
// field of every operation, present and future, with Trove's 400.
//
// Raw JSON values (json.RawMessage: configuration group values, quota
// limits) are left to their handler, which interprets them and answers
// in its own terms (a configuration value is refused with 422 by
// validateValues).

// textChecked returns the formats with an Unmarshal that also checks the
// strings of the decoded value.
func textChecked(formats map[string]huma.Format) map[string]huma.Format {
	out := make(map[string]huma.Format, len(formats))
	for contentType, f := range formats {
		unmarshal := f.Unmarshal
		f.Unmarshal = func(data []byte, v any) error {
			if err := unmarshal(data, v); err != nil {
				return err
			}
			// Huma decodes a body twice: into any for schema validation,
			// then into the operation's type, which is what is checked (it
			// knows which values are raw).
			if _, generic := v.(*any); generic {
				return nil
			}
			return checkText(reflect.ValueOf(v), "")
		}
		out[contentType] = f
	}
	return out
}

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// checkText returns an error naming the first string under v (a decoded
// request body) that holds a control character. The error never quotes the
// value: it may be a password.
func checkText(v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return checkText(v.Elem(), path)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case name == "-":
				continue
			case name == "" && f.Anonymous:
				name = path // embedded: its fields are the outer object's
			case name == "":
				name = joinPath(path, f.Name)
			default:
				name = joinPath(path, name)
			}
			if err := checkText(v.Field(i), name); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type() == rawMessageType || v.Type().Elem().Kind() == reflect.Uint8 {
			return nil
		}
		for i := range v.Len() {
			if err := checkText(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		raw := v.Type().Elem() == rawMessageType
		iter := v.MapRange()
		for iter.Next() {
			if k := iter.Key(); k.Kind() == reflect.String && hasControl(k.String()) {
				return fmt.Errorf("%s: a key must not contain control characters", cmpOr(path, "body"))
			}
			if raw {
				continue
			}
			if err := checkText(iter.Value(), joinPath(path, fmt.Sprint(iter.Key()))); err != nil {
				return err
			}
		}
	case reflect.String:
		if hasControl(v.String()) {
			return fmt.Errorf("%s must not contain control characters (NUL, line breaks, tabs, escapes)", cmpOr(path, "body"))
		}
	}
	return nil
}

func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// recoverPanics answers a handler's panic with Trove's generic 500 and an
// id to find the logged panic by, as Trove's faultwrapper does; without it
// net/http drops the connection and the client gets no answer at all.
func (d *Deps) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil || p == http.ErrAbortHandler {
				if p != nil {
					panic(p)
				}
				return
			}
			id := uuid.NewString()
			d.Logger.ErrorContext(r.Context(), "panic serving request", "method", r.Method, "path", r.URL.Path,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()), "error_id", id)
			openapi.WriteFault(w, openapi.Errorf(http.StatusInternalServerError,
				"Internal Server Error. Please keep this ID to help us figure out what went wrong: (%s).", id))
		}()
		next.ServeHTTP(w, r)
	})
}
