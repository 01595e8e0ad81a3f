package openapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"
)

// Fault is Trove's error body: {"<faultName>": {"code": N, "message": "..."}}.
// Every error the API returns, including Huma's own validation and parsing
// errors, is a Fault, so the Trove clients print its message.
type Fault struct {
	Status  int
	Message string
	// RetryAfter (seconds) is set on 413 overLimit answers from rate limits.
	RetryAfter int
}

// faultNames maps status codes to Trove's fault names (API §0.4).
var faultNames = map[int]string{
	400: "badRequest",
	401: "unauthorized",
	403: "forbidden",
	404: "itemNotFound",
	405: "badMethod",
	406: "notAcceptable",
	409: "conflict",
	413: "overLimit",
	415: "badMediaType",
	422: "unprocessableEntity",
	500: "instanceFault",
	501: "notImplemented",
	503: "serviceUnavailable",
}

// FaultName is Trove's name for a status code's fault.
func FaultName(status int) string {
	if n, ok := faultNames[status]; ok {
		return n
	}
	if status >= 500 {
		return "instanceFault"
	}
	return "badRequest"
}

type faultBody struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	Details    string `json:"details,omitempty"`
	RetryAfter string `json:"retryAfter,omitempty"`
}

// MarshalJSON renders the wrapped Trove shape.
func (f *Fault) MarshalJSON() ([]byte, error) {
	b := faultBody{Code: f.Status, Message: f.Message}
	if f.RetryAfter > 0 {
		b.Details = "Only a limited number of requests is allowed per minute."
		b.RetryAfter = fmt.Sprint(f.RetryAfter)
	}
	return json.Marshal(map[string]faultBody{FaultName(f.Status): b})
}

func (f *Fault) Error() string { return f.Message }

// GetStatus implements huma.StatusError.
func (f *Fault) GetStatus() int { return f.Status }

// ContentType keeps Trove's plain JSON: the clients only parse error bodies
// whose Content-Type starts with application/json (not problem+json).
func (f *Fault) ContentType(string) string { return "application/json" }

// Schema documents the fault body in the OpenAPI spec.
func (f *Fault) Schema(r huma.Registry) *huma.Schema {
	return &huma.Schema{
		Type:        huma.TypeObject,
		Description: `Trove fault: a single key naming the fault (badRequest, unauthorized, forbidden, itemNotFound, overLimit, unprocessableEntity, instanceFault, ...) whose value holds the status code and message.`,
		AdditionalProperties: &huma.Schema{
			Type:     huma.TypeObject,
			Required: []string{"code", "message"},
			Properties: map[string]*huma.Schema{
				"code":    {Type: huma.TypeInteger},
				"message": {Type: huma.TypeString},
			},
		},
	}
}

// Errorf returns a Fault with a formatted message.
func Errorf(status int, format string, args ...any) *Fault {
	return &Fault{Status: status, Message: fmt.Sprintf(format, args...)}
}

// Common faults.
func BadRequest(format string, args ...any) *Fault { return Errorf(400, format, args...) }
func NotFound(format string, args ...any) *Fault   { return Errorf(404, format, args...) }

// newHumaError turns Huma's errors into Faults. Huma reports request
// validation failures as 422; Trove answers them with 400 "Validation
// error: ...".
func newHumaError(status int, msg string, errs ...error) huma.StatusError {
	var details []string
	for _, err := range errs {
		if err == nil {
			continue
		}
		var d *huma.ErrorDetail
		if errors.As(err, &d) {
			loc := strings.TrimPrefix(d.Location, "body.")
			details = append(details, strings.TrimSpace(loc+" "+d.Message))
		} else {
			details = append(details, err.Error())
		}
	}
	if status == http.StatusUnprocessableEntity {
		return &Fault{Status: http.StatusBadRequest, Message: "Validation error: " + strings.Join(details, "; ")}
	}
	if status >= 500 {
		return &Fault{Status: status, Message: "Internal Server Error."}
	}
	if len(details) > 0 {
		msg = msg + ": " + strings.Join(details, "; ")
	}
	return &Fault{Status: status, Message: msg}
}

func init() {
	huma.NewError = newHumaError
}

// WriteFault writes f as a response, for code outside Huma (middleware).
func WriteFault(w http.ResponseWriter, f *Fault) {
	body, _ := f.MarshalJSON()
	w.Header().Set("Content-Type", "application/json")
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(f.RetryAfter))
	}
	w.WriteHeader(f.Status)
	_, _ = w.Write(body)
}
