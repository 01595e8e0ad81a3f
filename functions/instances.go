package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// instancesPageSize is Trove's instances_page_size.
const instancesPageSize = 20

type instanceInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
}

type instanceListInput struct {
	TenantPath
	Limit            int    `query:"limit" minimum:"0" doc:"Page size (at most 20)"`
	Marker           string `query:"marker" maxLength:"64" doc:"Id of the last instance of the previous page"`
	IncludeClustered string `query:"include_clustered" doc:"Accepted for Trove compatibility; Coffer has no clusters yet"`
}

type instanceCreateInput struct {
	TenantPath
	Body struct {
		Instance openapi.InstanceCreate `json:"instance"`
	}
}

type instanceOutput struct {
	Body struct {
		Instance openapi.Instance `json:"instance"`
	}
}

type instanceListOutput struct {
	Body struct {
		Instances []openapi.Instance `json:"instances"`
		Links     []openapi.Link     `json:"links,omitempty"`
	}
}

// Instances serves create, list, show and delete of database instances.
func Instances(api huma.API, deps *Deps) {
	tags := []string{"Instances"}
	huma.Register(api, huma.Operation{
		OperationID: "list-instances", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/instances",
		Summary: "List instances", Description: "Pages of at most 20, ordered by id; a `links` entry with rel=next carries the next marker.",
		Tags: tags, Security: tokenSecurity,
	}, func(ctx context.Context, in *instanceListInput) (*instanceListOutput, error) {
		return deps.listInstances(ctx, in, false)
	})
	huma.Register(api, huma.Operation{
		OperationID: "list-instances-detail", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/instances/detail",
		Summary: "List instances with details", Tags: tags, Security: tokenSecurity,
	}, func(ctx context.Context, in *instanceListInput) (*instanceListOutput, error) {
		return deps.listInstances(ctx, in, true)
	})
	huma.Register(api, huma.Operation{
		OperationID: "create-instance", Method: http.MethodPost, Path: "/v1.0/{tenant_id}/instances",
		Summary: "Create an instance", Description: "Answers at once with the instance in BUILD; it becomes ACTIVE when its guest has prepared the datastore.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK,
		Errors:       []int{http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge},
		MaxBodyBytes: 1 << 20,
	}, deps.createInstance)
	huma.Register(api, huma.Operation{
		OperationID: "show-instance", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/instances/{instance_id}",
		Summary: "Show an instance", Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.showInstance)
	huma.Register(api, huma.Operation{
		OperationID: "delete-instance", Method: http.MethodDelete, Path: "/v1.0/{tenant_id}/instances/{instance_id}",
		Summary: "Delete an instance", Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusNotFound, http.StatusUnprocessableEntity},
	}, deps.deleteInstance)
}

func (d *Deps) listInstances(ctx context.Context, in *instanceListInput, detail bool) (*instanceListOutput, error) {
	size := pageSize(in.Limit, instancesPageSize)
	params := store.ListInstancesParams{ProjectID: in.TenantID, MaxRows: int32(size + 1)}
	var err error
	if params.Marker, err = idMarker(in.Marker); err != nil {
		return nil, err
	}
	rows, err := d.queries().ListInstances(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list instances", err)
	}
	out := &instanceListOutput{}
	if len(rows) > size {
		rows = rows[:size]
		q := url.Values{}
		if in.Limit > 0 {
			q.Set("limit", fmt.Sprint(in.Limit))
		}
		if in.IncludeClustered != "" {
			q.Set("include_clustered", in.IncludeClustered)
		}
		out.Body.Links = nextLink(ctx, "/v1.0/"+in.TenantID+"/instances", q, rows[len(rows)-1].Instance.ID.String())
	}
	out.Body.Instances = make([]openapi.Instance, 0, len(rows))
	for _, r := range rows {
		v := instanceRow{Instance: r.Instance, FlavorName: r.FlavorName, VersionName: r.VersionName,
			VersionNumber: r.VersionNumber, DatastoreName: r.DatastoreName}
		out.Body.Instances = append(out.Body.Instances, d.instanceView(ctx, v, detail, false))
	}
	return out, nil
}

func (d *Deps) showInstance(ctx context.Context, in *instanceInput) (*instanceOutput, error) {
	row, err := d.getInstance(ctx, d.queries(), in.TenantID, in.InstanceID)
	if err != nil {
		return nil, err
	}
	out := &instanceOutput{}
	out.Body.Instance = d.instanceView(ctx, row, true, true)
	return out, nil
}

// getInstance reads a live instance of the tenant; anything else (another
// project's, deleted, malformed id) is Trove's plain 404.
func (d *Deps) getInstance(ctx context.Context, q *store.Queries, tenant, ref string) (instanceRow, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return instanceRow{}, openapi.NotFound("Instance %s could not be found.", ref)
	}
	r, err := q.GetInstance(ctx, store.GetInstanceParams{ID: id, ProjectID: tenant})
	if errors.Is(err, pgx.ErrNoRows) {
		return instanceRow{}, openapi.NotFound("Instance %s could not be found.", ref)
	}
	if err != nil {
		return instanceRow{}, d.internal(ctx, "show instance", err)
	}
	return instanceRow{Instance: r.Instance, FlavorName: r.FlavorName, VersionName: r.VersionName,
		VersionNumber: r.VersionNumber, DatastoreName: r.DatastoreName}, nil
}

// instanceRow is an instance with the names its view shows.
type instanceRow struct {
	Instance      store.Instance
	FlavorName    string
	VersionName   string
	VersionNumber string
	DatastoreName string
}

const gib = 1 << 30

func (d *Deps) instanceView(ctx context.Context, r instanceRow, detail, live bool) openapi.Instance {
	i := r.Instance
	in := status.Instance{Task: i.Task, ComputeStatus: i.ComputeStatus, ServiceStatus: i.ServiceStatus, HeartbeatAt: i.HeartbeatAt,
		BackupRunning: i.RunningBackupID.Valid}
	v := openapi.Instance{
		ID: i.ID.String(), Name: i.Name,
		Status:          status.Status(in),
		OperatingStatus: status.OperatingStatus(in, d.now()),
		Links:           links(ctx, i.ProjectID, "instances", i.ID.String()),
		Flavor:          openapi.InstanceFlavor{ID: i.FlavorID, Links: links(ctx, i.ProjectID, "flavors", i.FlavorID)},
		Datastore:       openapi.InstanceDatastore{Type: r.DatastoreName, Version: r.VersionName},
		Region:          d.Region,
		Access:          openapi.Access{IsPublic: false},
		Volume:          openapi.InstanceVolume{Size: int(i.VolumeSizeGb)},
		IP:              []string{},
		Addresses:       []openapi.Address{},
	}
	if i.Address != "" {
		v.IP = []string{i.Address}
		v.Addresses = []openapi.Address{{Address: i.Address, Type: "private"}}
	}
	if i.AccessIsPublic.Valid { // stored by an update (instance_update.go)
		v.Access = openapi.Access{IsPublic: i.AccessIsPublic.Bool, AllowedCIDRs: i.AccessAllowedCidrs}
	}
	if p := principal(ctx); p.IsAdmin() {
		v.TenantID, v.ServerID = i.ProjectID, i.ServerID
	}
	if !detail {
		return v
	}
	v.Datastore.VersionNumber = r.VersionNumber
	created, updated := openapi.Time(i.CreatedAt), openapi.Time(i.UpdatedAt)
	v.Created, v.Updated = &created, &updated
	if i.HeartbeatAt != nil {
		hb := openapi.Time(*i.HeartbeatAt)
		v.ServiceStatusUpdated = &hb
	}
	if i.FaultAt != nil {
		f := &openapi.InstanceFault{Message: i.FaultMessage, Created: openapi.Time(*i.FaultAt)}
		if principal(ctx).IsAdmin() {
			details := i.FaultDetails
			f.Details = &details
		}
		v.Fault = f
	}
	if i.ConfigurationID.Valid {
		v.Configuration = d.configurationRef(ctx, i.ProjectID, i.ConfigurationID.UUID)
	}
	if live && v.Status == "ACTIVE" {
		used := math.Round(float64(i.VolumeUsedBytes)/gib*100) / 100
		v.Volume.Used = &used
	}
	return v
}

var hasAlnum = regexp.MustCompile(`[A-Za-z0-9]`)

func (d *Deps) createInstance(ctx context.Context, in *instanceCreateInput) (*instanceOutput, error) {
	req := in.Body.Instance
	if !hasAlnum.MatchString(req.Name) {
		return nil, openapi.BadRequest("Validation error: instance name must contain at least one letter or digit.")
	}
	if strings.ContainsFunc(req.Name, unicode.IsControl) {
		return nil, openapi.BadRequest("Validation error: instance name must not contain control characters.")
	}
	for field, v := range map[string]any{
		"replica_of": req.ReplicaOf, "replica_count": req.ReplicaCount,
		"configuration": req.Configuration, "locality": req.Locality, "nics": req.Nics,
	} {
		if v != nil && !isEmptyJSON(v) {
			return nil, openapi.BadRequest("'%s' is not supported by this Coffer deployment yet.", field)
		}
	}
	access, err := createAccess(req.Access)
	if err != nil {
		return nil, err
	}
	q := d.queries()

	flavorRef := string(req.FlavorRef)
	if i := strings.LastIndex(flavorRef, "/"); i >= 0 {
		flavorRef = flavorRef[i+1:]
	}
	if flavorRef == "" {
		return nil, openapi.BadRequest("Validation error: instance flavorRef is required.")
	}
	flavor, err := q.GetOfferedFlavor(ctx, flavorRef)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, openapi.BadRequest("Flavor %s could not be found.", flavorRef)
	} else if err != nil {
		return nil, d.internal(ctx, "create instance: flavor", err)
	}

	if req.Volume == nil || req.Volume.Size == "" {
		return nil, openapi.BadRequest("Volume size was not specified.")
	}
	size, ok := req.Volume.Size.Int()
	if !ok || size < 1 {
		return nil, openapi.BadRequest("Validation error: instance volume size must be a positive integer, got '%s'.", req.Volume.Size)
	}
	if size > d.MaxVolumeGB {
		return nil, openapi.Errorf(http.StatusRequestEntityTooLarge,
			"Volume 'size' cannot exceed maximum of %d GB, %d cannot be accepted.", d.MaxVolumeGB, size)
	}
	volumeType, err := d.createVolumeType(ctx, q, req.Volume.Type)
	if err != nil {
		return nil, err
	}

	restore, err := d.restoreBackup(ctx, q, in.TenantID, req.RestorePoint)
	if err != nil {
		return nil, err
	}
	dsRef, verRef := d.DefaultDatastore, ""
	if restore != nil && req.Datastore == nil { // the backup's, by default
		dsRef, verRef = restore.datastoreName, restore.backup.DatastoreVersionID.String()
	}
	if req.Datastore != nil {
		if req.Datastore.Type != "" {
			dsRef = req.Datastore.Type
		}
		verRef = req.Datastore.Version
		if verRef == "" {
			verRef = req.Datastore.VersionNumber
		}
	}
	ds, err := findDatastore(ctx, q, dsRef)
	if err != nil {
		return nil, d.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", dsRef))
	}
	var version store.DatastoreVersion
	if verRef == "" {
		if !ds.DefaultVersionID.Valid {
			return nil, openapi.BadRequest("Default version for datastore '%s' not found.", ds.Name)
		}
		version, err = q.GetDatastoreVersion(ctx, ds.DefaultVersionID.UUID)
	} else {
		version, err = findVersion(ctx, q, ds, verRef)
	}
	if err != nil {
		return nil, d.lookupError(ctx, err, openapi.BadRequest("Datastore version '%s' cannot be found.", verRef))
	}
	if !version.Active {
		return nil, openapi.BadRequest("Datastore version '%s' is not active.", version.Name)
	}
	if err := d.checkVersionImage(ctx, version); err != nil {
		return nil, err
	}

	prepare, ferr := prepareRequest(req, ds.Name, version, flavor, size)
	if ferr != nil {
		return nil, ferr
	}
	if restore != nil {
		if prepare.Restore, err = d.restoreRequest(ctx, q, in.TenantID, restore, ds, version, size); err != nil {
			return nil, err
		}
	}
	payload, err := json.Marshal(prepare)
	if err != nil {
		return nil, d.internal(ctx, "create instance: encode prepare", err)
	}

	id := uuid.New()
	var row instanceRow
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		// Under the project's quota lock until commit (quotas.go).
		if f, err := checkQuota(ctx, q, in.TenantID, map[string]int64{
			quotaInstances: 1, quotaRAM: int64(flavor.RamMb), quotaVolumes: int64(size)}); err != nil || f != nil {
			if f != nil {
				return f
			}
			return err
		}
		inst, err := q.InsertInstance(ctx, store.InsertInstanceParams{
			ID: id, ProjectID: in.TenantID, Name: req.Name, FlavorID: flavor.ID,
			VolumeSizeGb: int32(size), DatastoreVersionID: version.ID,
		})
		if err != nil {
			return fmt.Errorf("insert instance: %w", err)
		}
		if access != nil {
			access.ID = id
			if err := q.SetInstanceCreateAccess(ctx, *access); err != nil {
				return fmt.Errorf("store access: %w", err)
			}
			inst.AccessIsPublic, inst.AccessAllowedCidrs = access.IsPublic, access.AllowedCidrs
		}
		if volumeType != "" {
			if err := q.SetInstanceVolumeType(ctx, store.SetInstanceVolumeTypeParams{ID: id, VolumeType: volumeType}); err != nil {
				return fmt.Errorf("store volume type: %w", err)
			}
			inst.VolumeType = volumeType
		}
		if restore != nil {
			if err := d.lockRestore(ctx, q, id, restore); err != nil {
				return err
			}
		}
		// The prepare command is queued with the row (the agent fetches it
		// once it runs), so the users' passwords live only in this row,
		// which is cleared when the command completes, never in job args.
		if _, err := q.InsertAgentCommand(ctx, store.InsertAgentCommandParams{
			ID: uuid.New(), InstanceID: id, Name: protocol.CommandPrepare, Payload: payload, LeaseSeconds: prepareLease(restore),
		}); err != nil {
			return fmt.Errorf("queue prepare: %w", err)
		}
		if err := d.createModules(ctx, q, inst, req.Modules); err != nil { // modules.go: after prepare
			return err
		}
		if _, err := d.River.InsertTx(ctx, tx, jobs.ProvisionInstance{InstanceID: id}, nil); err != nil {
			return fmt.Errorf("enqueue provision: %w", err)
		}
		if err := jobs.InsertEvent(ctx, q, in.TenantID, "instance.created", id, nil); err != nil {
			return err
		}
		row = instanceRow{Instance: inst, FlavorName: flavor.Name, VersionName: version.Name,
			VersionNumber: version.Version, DatastoreName: ds.Name}
		return nil
	})
	var quotaFault *openapi.Fault
	if errors.As(err, &quotaFault) {
		return nil, quotaFault
	}
	if err != nil {
		return nil, d.internal(ctx, "create instance", err)
	}
	out := &instanceOutput{}
	out.Body.Instance = d.instanceView(ctx, row, true, false)
	return out, nil
}

// prepareRequest validates the databases and users of a create request and
// builds the guest's prepare payload.
func prepareRequest(req openapi.InstanceCreate, datastore string, v store.DatastoreVersion, f store.Flavor, size int) (protocol.PrepareRequest, *openapi.Fault) {
	p := protocol.PrepareRequest{Datastore: v.Manager, Version: v.Name, FlavorRAMMB: int(f.RamMb), VolumeSizeGB: size}
	dbs := map[string]bool{}
	for _, db := range req.Databases {
		// What the databases and users routes refuse, the guest's prepare
		// would refuse too, leaving the instance in ERROR: refuse it here.
		if f := validDatabaseName(db.Name); f != nil {
			return p, f
		}
		if f := validDatabaseOptions(db.CharacterSet, db.Collate); f != nil {
			return p, f
		}
		if dbs[db.Name] {
			return p, openapi.BadRequest("Database '%s' is specified more than once.", db.Name)
		}
		dbs[db.Name] = true
		p.Databases = append(p.Databases, protocol.Database{Name: db.Name, CharacterSet: db.CharacterSet, Collate: db.Collate})
	}
	users := map[string]bool{}
	for _, u := range req.Users {
		host := u.Host
		if host == "" {
			host = "%"
		}
		if f := validUserName(u.Name); f != nil {
			return p, f
		}
		if f := validPassword(u.Name, u.Password); f != nil {
			return p, f
		}
		if f := validHost(v.Manager, u.Name, host); f != nil {
			return p, f
		}
		if users[u.Name+"@"+host] {
			return p, openapi.BadRequest("User '%s' is specified more than once.", u.Name)
		}
		users[u.Name+"@"+host] = true
		pu := protocol.User{Name: u.Name, Password: u.Password, Host: host}
		for _, db := range u.Databases {
			if !dbs[db.Name] {
				return p, openapi.BadRequest("Database '%s' of user '%s' is not in the list of databases to create.", db.Name, u.Name)
			}
			pu.Databases = append(pu.Databases, db.Name)
		}
		p.Users = append(p.Users, pu)
	}
	return p, nil
}

// isEmptyJSON reports whether a decoded JSON value carries nothing (null,
// "", [], {}), as clients send for options they were not given.
func isEmptyJSON(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func (d *Deps) deleteInstance(ctx context.Context, in *instanceInput) (*struct{}, error) {
	id, err := uuid.Parse(in.InstanceID)
	if err != nil {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	var fault *openapi.Fault
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		inst, err := q.LockInstance(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (inst.ProjectID != in.TenantID || inst.DeletedAt != nil)) {
			fault = openapi.NotFound("Instance %s could not be found.", in.InstanceID)
			return nil
		}
		if err != nil {
			return err
		}
		switch inst.Task {
		case status.TaskDeleting:
			return nil // already on its way
		case status.TaskBuilding:
			fault = openapi.Errorf(http.StatusUnprocessableEntity, "Instance %s is not ready.", id)
			return nil
		}
		if err := q.SetInstanceTask(ctx, store.SetInstanceTaskParams{ID: id, Task: status.TaskDeleting}); err != nil {
			return err
		}
		if err := q.CancelAgentCommands(ctx, id); err != nil {
			return err
		}
		if _, err := d.River.InsertTx(ctx, tx, jobs.DeleteInstance{InstanceID: id}, nil); err != nil {
			return fmt.Errorf("enqueue delete: %w", err)
		}
		return jobs.InsertEvent(ctx, q, inst.ProjectID, "instance.deleting", id, nil)
	})
	if err != nil {
		return nil, d.internal(ctx, "delete instance", err)
	}
	if fault != nil {
		return nil, fault
	}
	return nil, nil
}
