package jobs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// serverError is a server the cloud built in ERROR, with its fault.
type serverError struct {
	instanceID uuid.UUID
	fault      string
}

func (e *serverError) Error() string {
	return fmt.Sprintf("provision %s: server in ERROR: %s", e.instanceID, e.fault)
}

// serverFaultMessage is the fault message of an instance whose server
// could not be created: with the cloud's own reason when it gave one (a
// refusal: quota, an invalid request; a server in ERROR: Nova's fault,
// e.g. no valid host), which is what the tenant can act on. The details
// (admins only) keep the whole error.
func serverFaultMessage(cause error) string {
	const msg = "The server could not be created."
	var se *serverError
	if errors.As(cause, &se) && strings.TrimSpace(se.fault) != "" {
		return "The server could not be created: " + strings.TrimSpace(se.fault)
	}
	if errors.Is(cause, provider.ErrRefused) {
		if _, reason, ok := strings.Cut(cause.Error(), provider.ErrRefused.Error()+": "); ok && reason != "" {
			return "The server could not be created; the cloud refused it: " + reason
		}
	}
	return msg
}
