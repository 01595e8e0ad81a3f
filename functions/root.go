package functions

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Root: enable (the API generates the password unless the body gives one
// and answers with it at once; the agent sets it), show (from the root
// history, as Trove's API does, not from the guest), disable; and the
// management view of the history.
//
// The history is written in the transaction that queues enable_root; if
// the agent fails that command, its continuation (jobs/root.go) removes
// the row, so root show never claims an enable that did not happen.

type rootEnableInput struct {
	TenantPath
	InstanceID string              `path:"instance_id" maxLength:"64"`
	Body       *openapi.RootEnable `required:"false"`
}

type rootEnableOutput struct {
	Body struct {
		User openapi.RootCredentials `json:"user"`
	}
}

type rootShowOutput struct {
	Body struct {
		RootEnabled bool `json:"rootEnabled"`
	}
}

type rootHistoryOutput struct {
	Body struct {
		RootHistory openapi.RootHistory `json:"root_history"`
	}
}

func init() { register(Root) }

// Root serves root enable, show and disable, and the mgmt root history.
func Root(api huma.API, deps *Deps) {
	tags := []string{"Root"}
	path := "/v1.0/{tenant_id}/instances/{instance_id}/root"
	huma.Register(api, huma.Operation{
		OperationID: "enable-root", Method: http.MethodPost, Path: path,
		Summary: "Enable the datastore's superuser",
		Description: "Answers at once with the superuser's name (postgres for PostgreSQL) and password: the one in the body, or a generated one. " +
			"The agent sets it within moments; connect with it on the instance's address.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity}, MaxBodyBytes: 16 << 10,
	}, deps.enableRoot)
	huma.Register(api, huma.Operation{
		OperationID: "show-root", Method: http.MethodGet, Path: path,
		Summary: "Show whether root is enabled", Description: "True when root was enabled and not disabled since.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound, http.StatusUnprocessableEntity},
	}, deps.showRoot)
	huma.Register(api, huma.Operation{
		OperationID: "disable-root", Method: http.MethodDelete, Path: path,
		Summary:     "Disable the datastore's superuser",
		Description: "The superuser can no longer log in, and its sessions end. 404 when root was never enabled.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusNoContent,
		Errors: []int{http.StatusNotFound, http.StatusUnprocessableEntity},
	}, deps.disableRoot)
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-show-root-history", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/mgmt/instances/{instance_id}/root",
		Summary: "Show when root was last enabled on an instance, and by whom (admin)", Tags: []string{"Management"},
		Security: tokenSecurity, Errors: []int{http.StatusUnauthorized, http.StatusNotFound},
	}, deps.showRootHistory)
}

// rootUserName is the superuser root enable manages, per datastore
// manager (Trove's guests: postgres for PostgreSQL, root for MySQL).
func rootUserName(manager string) string {
	if manager == "postgresql" {
		return "postgres"
	}
	return "root"
}

// generatePassword returns 36 random letters and digits (about 214 bits),
// like Trove's generated root passwords.
func generatePassword() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	max := big.NewInt(int64(len(alphabet)))
	for range 36 {
		n, _ := rand.Int(rand.Reader, max) // crypto/rand never fails (Go ≥ 1.24)
		b.WriteByte(alphabet[n.Int64()])
	}
	return b.String()
}

// caller is who the root history records: the caller's user.
func caller(ctx context.Context) string {
	if p := principal(ctx); p.UserName != "" {
		return p.UserName
	}
	return principal(ctx).ProjectID
}

func (d *Deps) enableRoot(ctx context.Context, in *rootEnableInput) (*rootEnableOutput, error) {
	password := ""
	if in.Body != nil && in.Body.Password != nil {
		password = *in.Body.Password
	}
	if password != "" {
		if f := validPassword("root", password); f != nil {
			return nil, f
		}
	} else {
		password = generatePassword()
	}
	out := &rootEnableOutput{}
	err := d.changeAccounts(ctx, in.TenantID, in.InstanceID, "enable root", func(t accountTarget, _ *inventory) error {
		cmd, err := jobs.QueueCommand(ctx, t.q, t.inst.ID, protocol.CommandEnableRoot, protocol.EnableRootRequest{Password: password}, accountsLease)
		if err != nil {
			return err
		}
		if err := t.q.InsertRootHistory(ctx, store.InsertRootHistoryParams{InstanceID: t.inst.ID, EnabledBy: caller(ctx), CommandID: cmd}); err != nil {
			return fmt.Errorf("record root history: %w", err)
		}
		out.Body.User = openapi.RootCredentials{Name: rootUserName(t.manager), Password: password}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (d *Deps) showRoot(ctx context.Context, in *instanceInput) (*rootShowOutput, error) {
	t, _, err := d.readAccounts(ctx, in.TenantID, in.InstanceID)
	if err != nil {
		return nil, err
	}
	h, err := d.queries().LatestRootHistory(ctx, t.inst.ID)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, d.internal(ctx, "show root", err)
	}
	out := &rootShowOutput{}
	out.Body.RootEnabled = err == nil && h.DisabledAt == nil
	return out, nil
}

func (d *Deps) disableRoot(ctx context.Context, in *instanceInput) (*struct{}, error) {
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "disable root", func(t accountTarget, _ *inventory) error {
		_, err := t.q.LatestRootHistory(ctx, t.inst.ID)
		if errors.Is(err, pgx.ErrNoRows) {
			return openapi.NotFound("Root user has never been enabled on the instance.")
		}
		if err != nil {
			return fmt.Errorf("read root history: %w", err)
		}
		if err := t.queue(ctx, protocol.CommandDisableRoot, nil); err != nil {
			return err
		}
		if err := t.q.DisableRootHistory(ctx, store.DisableRootHistoryParams{InstanceID: t.inst.ID, DisabledBy: caller(ctx)}); err != nil {
			return fmt.Errorf("record root disable: %w", err)
		}
		return nil
	})
}

// showRootHistory is Trove's mgmt root history: admin only (401 otherwise,
// as Trove's mgmt routes answer), for any project's instance.
func (d *Deps) showRootHistory(ctx context.Context, in *instanceInput) (*rootHistoryOutput, error) {
	if !principal(ctx).IsAdmin() {
		return nil, openapi.Errorf(http.StatusUnauthorized, "User does not have admin privileges.")
	}
	id, err := uuid.Parse(in.InstanceID)
	if err != nil {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	q := d.queries()
	if _, err := q.GetInstanceAnyProject(ctx, id); errors.Is(err, pgx.ErrNoRows) {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	} else if err != nil {
		return nil, d.internal(ctx, "mgmt root history", err)
	}
	out := &rootHistoryOutput{}
	out.Body.RootHistory = openapi.RootHistory{ID: id.String(), Enabled: "Never", User: "Nobody"}
	h, err := q.LatestRootHistory(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, nil
	}
	if err != nil {
		return nil, d.internal(ctx, "mgmt root history", err)
	}
	out.Body.RootHistory.Enabled = h.EnabledAt.UTC().Format(time.DateOnly + "T" + time.TimeOnly)
	out.Body.RootHistory.User = h.EnabledBy
	return out, nil
}
