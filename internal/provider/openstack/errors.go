package openstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// isNotFound reports a 404 from any service.
func isNotFound(err error) bool {
	return gophercloud.ResponseCodeIs(err, http.StatusNotFound)
}

// refusal turns an OpenStack error that a retry does not fix (the request
// is invalid, over quota, or names something that does not exist) into a
// provider.ErrRefused carrying the service's own message. Other errors
// (5xx, network, context) are returned as they are: a retry may succeed.
func refusal(service string, err error) error {
	var code gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &code) {
		return err
	}
	switch code.Actual {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound,
		http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return fmt.Errorf("%w: %s (%d): %s", provider.ErrRefused, service, code.Actual, apiMessage(code.Body))
	}
	return err
}

// apiMessage digs the human message out of an OpenStack error body: Nova
// and Cinder wrap it as {"badRequest": {"message": ...}}, Neutron as
// {"NeutronError": {"message": ...}}, Glance answers HTML or text.
func apiMessage(body []byte) string {
	var wrapped map[string]json.RawMessage
	if json.Unmarshal(body, &wrapped) == nil {
		for _, v := range wrapped {
			var inner struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(v, &inner) == nil && inner.Message != "" {
				return inner.Message
			}
		}
		var flat struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &flat) == nil && flat.Message != "" {
			return flat.Message
		}
	}
	s := string(body)
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

// refused makes a provider.ErrRefused for a reason the provider found
// itself (before asking the service to create anything).
func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", provider.ErrRefused, fmt.Sprintf(format, args...))
}
