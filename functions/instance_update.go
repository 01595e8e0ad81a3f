package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"unicode"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

func init() { register(InstanceUpdates) }

// configurationAttacher attaches the configuration group groupID to the
// locked instance inst, or with groupID nil detaches the attached group
// (nothing attached: nothing to do), in the caller's transaction.
// functions/configurations.go sets it; until it does, attaching answers
// 501 and detaching has nothing to detach.
var configurationAttacher func(ctx context.Context, q *store.Queries, inst store.Instance, groupID *uuid.UUID) *openapi.Fault

type instanceUpdateInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       struct {
		Instance openapi.InstanceUpdate `json:"instance"`
	}
}

type instanceEditInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       struct {
		Instance openapi.InstanceEdit `json:"instance"`
	}
}

// InstanceUpdates serves PUT and PATCH /instances/{id}.
func InstanceUpdates(api huma.API, deps *Deps) {
	tags := []string{"Instances"}
	errs := []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusNotImplemented}
	desc := "A new `name` (applied at once) and at most one other attribute: `configuration` (a group id to attach, " +
		"null to detach; an empty `instance` object also detaches), `replica_of` (detach from the replication source), " +
		"`datastore_version` (upgrade)"
	huma.Register(api, huma.Operation{
		OperationID: "update-instance", Method: http.MethodPut, Path: "/v1.0/{tenant_id}/instances/{instance_id}",
		Summary: "Update an instance", Description: desc + " or `access`.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: errs, MaxBodyBytes: 64 << 10,
	}, func(ctx context.Context, in *instanceUpdateInput) (*struct{}, error) {
		u := in.Body.Instance
		return nil, deps.updateInstance(ctx, in.TenantID, in.InstanceID, instanceChange{
			name: u.Name, detachReplica: u.ReplicaOf.Set, configuration: u.Configuration,
			datastoreVersion: u.DatastoreVersion, access: u.Access,
		})
	})
	huma.Register(api, huma.Operation{
		OperationID: "edit-instance", Method: http.MethodPatch, Path: "/v1.0/{tenant_id}/instances/{instance_id}",
		Summary: "Edit an instance (deprecated alias of update)", Description: desc + "; `slave_of` is an alias of `replica_of`.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: errs, MaxBodyBytes: 64 << 10,
	}, func(ctx context.Context, in *instanceEditInput) (*struct{}, error) {
		u := in.Body.Instance
		return nil, deps.updateInstance(ctx, in.TenantID, in.InstanceID, instanceChange{
			name: u.Name, detachReplica: u.ReplicaOf.Set || u.SlaveOf.Set, configuration: u.Configuration,
			datastoreVersion: u.DatastoreVersion,
		})
	})
}

// instanceChange is what an update asks for, from either verb.
type instanceChange struct {
	name             string
	detachReplica    bool
	configuration    openapi.NullableID
	datastoreVersion string
	access           *openapi.AccessUpdate
}

// updateInstance applies a change in one transaction: a failure of the
// attribute leaves the name unchanged too (Trove renames first and keeps
// the new name on failure; half-applied requests are worse).
func (d *Deps) updateInstance(ctx context.Context, tenant, ref string, c instanceChange) error {
	others := 0
	for _, set := range []bool{c.detachReplica, c.configuration.Set, c.datastoreVersion != "", c.access != nil} {
		if set {
			others++
		}
	}
	if others > 1 {
		return openapi.BadRequest("Only one attribute (except 'name') is allowed to update.")
	}
	if c.name != "" {
		if !hasAlnum.MatchString(c.name) {
			return openapi.BadRequest("Validation error: instance name must contain at least one letter or digit.")
		}
		if strings.ContainsFunc(c.name, unicode.IsControl) {
			return openapi.BadRequest("Validation error: instance name must not contain control characters.")
		}
	}
	var groupID *uuid.UUID
	if c.configuration.Set && c.configuration.Value != "" {
		id, err := uuid.Parse(c.configuration.Value)
		if err != nil {
			return openapi.BadRequest("Validation error: instance configuration '%s' is not a valid id.", c.configuration.Value)
		}
		groupID = &id
	}
	// An update naming nothing but (perhaps) a name detaches only when no
	// name is given: Trove's legacy client sends {"instance": {}} for
	// configuration-detach, while a rename must not lose the group.
	detach := (c.configuration.Set && groupID == nil) || (others == 0 && c.name == "")
	var cidrs []string
	if c.access != nil {
		var err error
		if cidrs, err = normalizeCIDRs(c.access.AllowedCIDRs); err != nil {
			return openapi.BadRequest("Validation error: instance access allowed_cidrs: %s.", err)
		}
	}

	return d.withInstance(ctx, tenant, ref, func(tx pgx.Tx, q *store.Queries, inst store.Instance) error {
		changed := map[string]any{}
		if c.name != "" && c.name != inst.Name {
			if err := q.RenameInstance(ctx, store.RenameInstanceParams{ID: inst.ID, Name: c.name}); err != nil {
				return fmt.Errorf("rename: %w", err)
			}
			changed["name"] = c.name
		}
		switch {
		case c.detachReplica:
			// Trove checks the instance can act before it finds it is no
			// replica. Coffer has no replication yet, so nothing is.
			if f := actionable(inst); f != nil {
				return f
			}
			return openapi.BadRequest("Instance %s is not a replica.", inst.ID)
		case groupID != nil || detach:
			if configurationAttacher == nil {
				if groupID == nil {
					break // nothing can be attached, so nothing to detach
				}
				return openapi.Errorf(http.StatusNotImplemented, "Configuration groups are not available in this deployment yet.")
			}
			if f := configurationAttacher(ctx, q, inst, groupID); f != nil {
				return f
			}
		case c.datastoreVersion != "":
			return d.checkUpgrade(ctx, q, inst, c.datastoreVersion)
		case c.access != nil:
			public := c.access.IsPublic != nil && *c.access.IsPublic
			if err := q.SetInstanceAccess(ctx, store.SetInstanceAccessParams{
				ID: inst.ID, IsPublic: pgtype.Bool{Bool: public, Valid: true}, AllowedCidrs: cidrs,
			}); err != nil {
				return fmt.Errorf("set access: %w", err)
			}
			changed["access"] = map[string]any{"is_public": public, "allowed_cidrs": cidrs}
			if err := d.applyAccess(ctx, tx, inst.ID); err != nil {
				return err
			}
		}
		if len(changed) == 0 {
			return nil
		}
		return jobs.InsertEvent(ctx, q, inst.ProjectID, jobs.EventInstanceUpdated, inst.ID, changed)
	})
}

// checkUpgrade answers a datastore_version update. Upgrades are not
// supported yet; the version is still looked up so that a typo gets
// Trove's answer rather than "not supported".
func (d *Deps) checkUpgrade(ctx context.Context, q *store.Queries, inst store.Instance, ref string) error {
	current, err := q.GetDatastoreVersion(ctx, inst.DatastoreVersionID)
	if err != nil {
		return fmt.Errorf("upgrade: current version: %w", err)
	}
	ds, err := q.GetDatastoreByID(ctx, current.DatastoreID)
	if err != nil {
		return fmt.Errorf("upgrade: datastore: %w", err)
	}
	v, err := findVersion(ctx, q, ds, ref)
	if errors.Is(err, errNotFound) || errors.Is(err, pgx.ErrNoRows) {
		return openapi.BadRequest("Datastore version '%s' cannot be found.", ref)
	}
	if errors.Is(err, errAmbiguous) {
		return openapi.BadRequest("%s", err.Error())
	}
	if err != nil {
		return fmt.Errorf("upgrade: find version %s: %w", ref, err)
	}
	if v.ID == current.ID {
		return openapi.BadRequest("Instance %s already runs datastore version %s.", inst.ID, v.Name)
	}
	return openapi.BadRequest("Upgrading an instance to another datastore version is not supported yet (from %s to %s).", current.Name, v.Name)
}

// normalizeCIDRs checks allowed_cidrs: IPv4 networks, as Trove's schema
// wants, a bare address meaning that one host. They are stored in their
// canonical form.
func normalizeCIDRs(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := map[string]bool{}
	for _, s := range in {
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("'%s' is not an IPv4 network (a.b.c.d/n)", s)
		}
		c := p.Masked().String()
		if seen[c] {
			return nil, fmt.Errorf("'%s' is given more than once", s)
		}
		seen[c] = true
		out = append(out, c)
	}
	return out, nil
}
