package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/provider/openstack"
	"github.com/coffer-dbaas/coffer/internal/provider/openstack/openstacktest"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/status"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

// The jobs that carry the control plane's decisions to the provider
// (catalog sync, resize, access, compute status), run against the real
// Nova, Cinder, Neutron and Glance of scripts/openstack-up.sh. They use the
// cloud CI shares between packages (COFFER_TEST_OPENSTACK_DIR, see
// .ci/run); without it they skip (outside CI) rather than start one of
// their own.

var osCloud struct {
	once  sync.Once
	cloud *openstacktest.Cloud
	err   error
}

// osFixture is a database with the seeded catalog and the openstack
// provider as the coffer service user.
type osFixture struct {
	deps  *Deps
	p     *openstack.Provider
	cloud *openstacktest.Cloud
}

func newOSFixture(t *testing.T) *osFixture {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIPPING: -short: needs OpenStack")
	}
	if os.Getenv("COFFER_TEST_OPENSTACK_DIR") == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("COFFER_TEST_OPENSTACK_DIR is not set (.ci/run sets it)")
		}
		t.Skip("SKIPPING: COFFER_TEST_OPENSTACK_DIR is not set: these tests share the OpenStack of scripts/openstack-up.sh DIR")
	}
	osCloud.once.Do(func() { osCloud.cloud, _, osCloud.err = openstacktest.Start(context.Background()) })
	if osCloud.err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("OpenStack is not available: %v", osCloud.err)
		}
		t.Skipf("SKIPPING: OpenStack is not available: %v", osCloud.err)
	}
	c := osCloud.cloud
	v := c.Vars
	ctx := testCtx(t, time.Minute)
	p, err := openstack.New(ctx, openstack.Config{
		AuthURL: v["COFFER_OS_AUTH_URL"], Username: v["COFFER_OS_USERNAME"], Password: v["COFFER_OS_PASSWORD"],
		ProjectName: v["COFFER_OS_PROJECT_NAME"], UserDomainName: v["COFFER_OS_USER_DOMAIN_NAME"],
		ProjectDomainName: v["COFFER_OS_PROJECT_DOMAIN_NAME"], Region: v["COFFER_OS_REGION"],
		ManagementNetworkID: v["COFFER_OS_NETWORK_ID"], NamePrefix: "coffer-",
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pool := testdb.New(t)
	if err := seed.Catalog(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(pool).UpsertProject(ctx, store.UpsertProjectParams{ID: "p1", Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	return &osFixture{p: p, cloud: c, deps: &Deps{Pool: pool, Provider: p, AgentAPIURL: "https://127.0.0.1:1",
		AgentCACert: "-", BuildTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler)}}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// server gives a new instance row a real server: CreateServer as the
// provision job calls it, with cidrs open to the datastore. The
// instance's row is task NONE, ACTIVE; the server goes when the test
// ends.
func (f *osFixture) server(t *testing.T, flavorID string, cidrs []string) (uuid.UUID, provider.Server) {
	t.Helper()
	ctx := testCtx(t, 3*time.Minute)
	id := uuid.New()
	if cidrs == nil {
		cidrs = []string{}
	}
	if _, err := f.deps.Pool.Exec(ctx, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task, access_allowed_cidrs)
		SELECT $1, 'p1', 'os', $2, 1, id, 'NONE', $3 FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, id, flavorID, cidrs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := f.p.DeleteServer(ctx, id.String()); err != nil {
			t.Errorf("clean up %s: %v", id, err)
		}
	})
	token := id.String() + "." + auth.NewToken()
	t0 := time.Now()
	srv, err := f.p.CreateServer(ctx, provider.ServerSpec{
		InstanceID: id.String(), Name: "os", FlavorID: flavorID, VolumeSizeGB: 1, Datastore: "postgresql",
		Version: "16", Image: f.cloud.Vars["OS_TEST_IMAGE_ID"], AllowedCIDRs: cidrs,
		Agent: protocol.AgentConfig{APIURL: "https://127.0.0.1:1", CACert: "-", InstanceID: id.String(), Token: token, Datastore: "postgresql"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server %s %s in %s", srv.ID, srv.Status, time.Since(t0).Round(time.Millisecond))
	if _, err := f.deps.Pool.Exec(ctx, `UPDATE instance SET server_id = $2, compute_status = $3, address = $4, port = $5,
		service_status = 'healthy', heartbeat_at = now() WHERE id = $1`, id, srv.ID, srv.Status, srv.Address, srv.Port); err != nil {
		t.Fatal(err)
	}
	return id, srv
}

// startResize does what the API's resize does: the action, its command
// held for the provider, task RESIZING.
func (f *osFixture) startResize(t *testing.T, id uuid.UUID, action, toFlavor string, toSize int32) ResizeInstance {
	t.Helper()
	ctx := context.Background()
	q := store.New(f.deps.Pool)
	inst, err := q.LockInstance(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	cmd := uuid.New()
	name := protocol.CommandResizeFlavor
	if action == ActionResizeVolume {
		name = protocol.CommandResizeVolume
	}
	if _, err := q.InsertAgentCommand(ctx, store.InsertAgentCommandParams{ID: cmd, InstanceID: id, Name: name, Payload: []byte("{}"), LeaseSeconds: 600}); err != nil {
		t.Fatal(err)
	}
	if err := q.HoldAgentCommand(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	if toFlavor == "" {
		toFlavor = inst.FlavorID
	}
	if toSize == 0 {
		toSize = inst.VolumeSizeGb
	}
	if err := q.InsertInstanceAction(ctx, store.InsertInstanceActionParams{CommandID: cmd, InstanceID: id, Action: action,
		FromFlavorID: inst.FlavorID, ToFlavorID: toFlavor, FromVolumeSizeGb: inst.VolumeSizeGb, ToVolumeSizeGb: toSize}); err != nil {
		t.Fatal(err)
	}
	if err := q.StartInstanceTask(ctx, store.StartInstanceTaskParams{ID: id, Task: status.TaskResizing, ServiceStatus: inst.ServiceStatus}); err != nil {
		t.Fatal(err)
	}
	return ResizeInstance{InstanceID: id, CommandID: cmd}
}

func (f *osFixture) command(t *testing.T, id uuid.UUID) store.AgentCommand {
	t.Helper()
	c, err := store.New(f.deps.Pool).GetAgentCommand(context.Background(), store.GetAgentCommandParams{ID: id, InstanceID: f.commandInstance(t, id)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *osFixture) commandInstance(t *testing.T, cmd uuid.UUID) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := f.deps.Pool.QueryRow(context.Background(), "SELECT instance_id FROM agent_command WHERE id = $1", cmd).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *osFixture) row(t *testing.T, id uuid.UUID) store.Instance {
	t.Helper()
	row, err := store.New(f.deps.Pool).GetInstanceAnyProject(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return row.Instance
}

func osJob[T argsWithOpts](args T, attempt int) *river.Job[T] {
	return &river.Job[T]{JobRow: &rivertype.JobRow{Attempt: attempt, MaxAttempts: args.InsertOpts().MaxAttempts}, Args: args}
}

// TestCatalogSyncFromOpenStack: the flavor table becomes Nova's flavors
// (seeded ones Nova lacks are deleted, or hidden while an instance uses
// them), volume types Cinder's; a flavor or type removed from the cloud
// goes at the next sync, one added comes.
func TestCatalogSyncFromOpenStack(t *testing.T) {
	t.Parallel()
	f := newOSFixture(t)
	ctx := testCtx(t, 2*time.Minute)
	admin := f.cloud
	suffix := randHex(4)

	// A flavor and a volume type of this test's own (other tests share
	// the cloud; they are only ever added to it by name).
	disk := 2
	fl, err := flavors.Create(ctx, admin.Compute, flavors.CreateOpts{ID: "coffer-sync-" + suffix, Name: "coffer.sync." + suffix,
		RAM: 768, VCPUs: 2, Disk: &disk}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flavors.Delete(context.Background(), admin.Compute, fl.ID).ExtractErr() })
	vt, err := volumetypes.Create(ctx, admin.Volume, volumetypes.CreateOpts{Name: "coffer-sync-" + suffix, Description: "sync test"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = volumetypes.Delete(context.Background(), admin.Volume, vt.ID).ExtractErr() })

	// Seeded flavor 3 is in use; 4 is not. Nova has neither.
	used := uuid.New()
	if _, err := f.deps.Pool.Exec(ctx, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task)
		SELECT $1, 'p1', 'old', '3', 1, id, 'NONE' FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, used); err != nil {
		t.Fatal(err)
	}
	res, err := SyncCatalogNow(ctx, f.deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sync: %+v", res)
	if !slices.Equal(res.Hidden, []string{"3"}) || !slices.Equal(res.Deleted, []string{"4"}) {
		t.Errorf("retired: hidden %v deleted %v; want [3] and [4]", res.Hidden, res.Deleted)
	}
	q := store.New(f.deps.Pool)
	offered, err := q.ListOfferedFlavors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]store.Flavor{}
	for _, fl := range offered {
		byID[fl.ID] = fl
	}
	novaFlavors, err := f.p.ListFlavors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range novaFlavors {
		got, ok := byID[n.ID]
		if !ok || got.Name != n.Name || int(got.RamMb) != n.RAMMB || int(got.Vcpus) != n.VCPUs || int(got.DiskGb) != n.DiskGB {
			t.Errorf("Nova flavor %+v offered as %+v (%v)", n, got, ok)
		}
	}
	if len(offered) != len(novaFlavors) {
		t.Errorf("%d flavors offered, Nova has %d", len(offered), len(novaFlavors))
	}
	// Nova's m1.tiny, not the seed's (512 MB).
	if byID["1"].RamMb != 256 || byID["coffer-sync-"+suffix].RamMb != 768 {
		t.Errorf("flavor 1: %+v; ours: %+v", byID["1"], byID["coffer-sync-"+suffix])
	}
	if hidden, err := q.GetFlavor(ctx, "3"); err != nil || !hidden.Hidden {
		t.Errorf("flavor 3 (in use): %+v %v", hidden, err)
	}
	if _, err := q.GetFlavor(ctx, "4"); err == nil {
		t.Error("flavor 4 (unused, not in Nova) is still there")
	}
	types, err := q.ListVolumeTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vt := range types {
		names = append(names, vt.Name)
	}
	if !slices.Contains(names, "__DEFAULT__") || !slices.Contains(names, "coffer-sync-"+suffix) {
		t.Errorf("volume types %v", names)
	}

	// Gone from the cloud: gone from the catalog; hidden while a running
	// resize still targets it (its completion sets it on the instance).
	if err := flavors.Delete(ctx, admin.Compute, fl.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	resizing := uuid.New()
	if _, err := f.deps.Pool.Exec(ctx, `INSERT INTO agent_command (id, instance_id, name) VALUES ($1, $2, 'resize_flavor')`, resizing, used); err != nil {
		t.Fatal(err)
	}
	if _, err := f.deps.Pool.Exec(ctx, `INSERT INTO instance_action (command_id, instance_id, action, from_flavor_id, to_flavor_id)
		VALUES ($1, $2, 'resize_flavor', '3', $3)`, resizing, used, fl.ID); err != nil {
		t.Fatal(err)
	}
	if err := volumetypes.Delete(ctx, admin.Volume, vt.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	res, err = SyncCatalogNow(ctx, f.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Hidden, []string{fl.ID}) || res.VolumeTypesRemoved < 1 {
		t.Errorf("second sync: %+v", res)
	}
	// The resize ends: the flavor goes at the next sync.
	if _, err := f.deps.Pool.Exec(ctx, `UPDATE instance_action SET completed_at = now(), outcome = 'failed' WHERE command_id = $1`, resizing); err != nil {
		t.Fatal(err)
	}
	if res, err := SyncCatalogNow(ctx, f.deps); err != nil || !slices.Equal(res.Deleted, []string{fl.ID}) {
		t.Errorf("sync after the resize: %+v %v", res, err)
	}
	if _, err := q.GetVolumeType(ctx, vt.ID); err == nil {
		t.Error("the deleted volume type is still offered")
	}
	// Again: nothing more to do, still hidden.
	if res, err := SyncCatalogNow(ctx, f.deps); err != nil || len(res.Deleted)+len(res.Hidden) != 0 {
		t.Errorf("third sync: %+v %v", res, err)
	}
	// The worker is the same call.
	if err := (&SyncCatalogWorker{deps: f.deps}).Work(ctx, osJob(SyncCatalog{}, 1)); err != nil {
		t.Fatal(err)
	}
}

// TestResizeThroughTheProvider: the resize job resizes the Nova server
// (resize + confirm) or extends the Cinder volume, then hands the held
// command to the agent; a retry changes nothing; a refusal ends the action
// with the instance back in ACTIVE, its fault saying why, the command
// cancelled and the server untouched.
func TestResizeThroughTheProvider(t *testing.T) {
	t.Parallel()
	f := newOSFixture(t)
	ctx := testCtx(t, 5*time.Minute)
	id, srv := f.server(t, "1", nil)
	w := &ResizeInstanceWorker{deps: f.deps}

	// Flavor 1 → 2.
	args := f.startResize(t, id, ActionResizeFlavor, "2", 0)
	t0 := time.Now()
	if err := w.Work(ctx, osJob(args, 1)); err != nil {
		t.Fatal(err)
	}
	t.Logf("resize job (Nova resize + confirm): %s", time.Since(t0).Round(time.Millisecond))
	s, err := servers.Get(ctx, f.cloud.Compute, srv.ID).Extract()
	if err != nil || s.Flavor["original_name"] != "m1.small" || s.Status != "ACTIVE" {
		t.Fatalf("server after the job: flavor %v status %s, %v", s.Flavor, s.Status, err)
	}
	if c := f.command(t, args.CommandID); c.State != "pending" || c.LeasedUntil != nil {
		t.Errorf("command after the job: %s until %v; want pending (handed to the agent)", c.State, c.LeasedUntil)
	}
	// A retry (the worker died after releasing) does nothing.
	if err := w.Work(ctx, osJob(args, 2)); err != nil {
		t.Fatal(err)
	}
	// The agent's answer completes it as before.
	f.agentAnswers(t, args.CommandID, true)
	if inst := f.row(t, id); inst.FlavorID != "2" || inst.Task != status.TaskNone || inst.ComputeStatus != provider.StatusActive {
		t.Errorf("after the agent's answer: flavor %s task %s compute %s", inst.FlavorID, inst.Task, inst.ComputeStatus)
	}

	// Volume 1 → 3 GB.
	args = f.startResize(t, id, ActionResizeVolume, "", 3)
	if err := w.Work(ctx, osJob(args, 1)); err != nil {
		t.Fatal(err)
	}
	vols := f.volumes(t, id)
	if len(vols) != 1 || vols[0].Size != 3 || vols[0].Status != "in-use" {
		t.Errorf("volume after the job: %+v", vols)
	}
	if c := f.command(t, args.CommandID); c.State != "pending" {
		t.Errorf("command after the volume job: %s", c.State)
	}
	f.agentAnswers(t, args.CommandID, true)
	if inst := f.row(t, id); inst.VolumeSizeGb != 3 || inst.Task != status.TaskNone {
		t.Errorf("after the agent's answer: %d GB, task %s", inst.VolumeSizeGb, inst.Task)
	}

	// A flavor Nova does not have: refused at once.
	args = f.startResize(t, id, ActionResizeFlavor, "coffer-no-such-flavor", 0)
	err = w.Work(ctx, osJob(args, 1))
	var cancel *river.JobCancelError
	if !errors.As(err, &cancel) || !errors.Is(err, provider.ErrRefused) {
		t.Fatalf("refused resize: %v", err)
	}
	f.checkFailedResize(t, id, args, "Resizing to flavor coffer-no-such-flavor failed; the instance keeps flavor 2.", "does not exist")

	// A flavor no host can hold: Nova gives up and the server stays; the
	// job retries, and on its last attempt fails the action.
	huge := hugeFlavor(t, f)
	args = f.startResize(t, id, ActionResizeFlavor, huge, 0)
	if err := w.Work(ctx, osJob(args, 1)); err == nil || errors.As(err, &cancel) {
		t.Fatalf("first attempt at an impossible resize: %v; want an error to retry", err)
	}
	if c := f.command(t, args.CommandID); c.State != "leased" || c.Attempts != 0 {
		t.Errorf("command after a failed attempt: %s (%d attempts); want still held", c.State, c.Attempts)
	}
	if err := w.Work(ctx, osJob(args, args.InsertOpts().MaxAttempts)); !errors.As(err, &cancel) {
		t.Fatalf("last attempt: %v", err)
	}
	f.checkFailedResize(t, id, args, "Resizing to flavor "+huge+" failed; the instance keeps flavor 2.", "did not resize")
	if s, _ := servers.Get(ctx, f.cloud.Compute, srv.ID).Extract(); s.Flavor["original_name"] != "m1.small" || s.Status != "ACTIVE" {
		t.Errorf("server after the failed resize: flavor %v status %s", s.Flavor, s.Status)
	}

	// reset_status ended an action while its job waited: the job leaves it.
	args = f.startResize(t, id, ActionResizeVolume, "", 4)
	if _, err := f.deps.Pool.Exec(ctx, `UPDATE agent_command SET state = 'cancelled' WHERE id = $1`, args.CommandID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.deps.Pool.Exec(ctx, `UPDATE instance_action SET outcome = 'cancelled', completed_at = now() WHERE command_id = $1`, args.CommandID); err != nil {
		t.Fatal(err)
	}
	if err := w.Work(ctx, osJob(args, 1)); err != nil {
		t.Fatal(err)
	}
	if vols := f.volumes(t, id); vols[0].Size != 3 {
		t.Errorf("a cancelled resize extended the volume to %d GB", vols[0].Size)
	}
}

func (f *osFixture) checkFailedResize(t *testing.T, id uuid.UUID, args ResizeInstance, message, detail string) {
	t.Helper()
	inst := f.row(t, id)
	in := status.Instance{Task: inst.Task, ComputeStatus: inst.ComputeStatus, ServiceStatus: inst.ServiceStatus, HeartbeatAt: inst.HeartbeatAt}
	if inst.Task != status.TaskNone || status.Status(in) != "ACTIVE" || inst.FaultMessage != message || !strings.Contains(inst.FaultDetails, detail) {
		t.Errorf("after a failed resize: task %s status %s fault %q (%q)", inst.Task, status.Status(in), inst.FaultMessage, inst.FaultDetails)
	}
	if c := f.command(t, args.CommandID); c.State != "cancelled" {
		t.Errorf("command of a failed resize: %s", c.State)
	}
	a, err := store.New(f.deps.Pool).GetInstanceAction(context.Background(), args.CommandID)
	if err != nil || a.Outcome != "failed" || a.CompletedAt == nil {
		t.Errorf("action of a failed resize: %+v %v", a, err)
	}
}

// agentAnswers records the agent's result on a command and runs its
// continuation, as the agent API and CompleteCommand do.
func (f *osFixture) agentAnswers(t *testing.T, cmd uuid.UUID, ok bool) {
	t.Helper()
	ctx := context.Background()
	id := f.commandInstance(t, cmd)
	state := "succeeded"
	if !ok {
		state = "failed"
	}
	if _, err := f.deps.Pool.Exec(ctx, `UPDATE agent_command SET state = $2, result = '{"service_status": "healthy"}', completed_at = now(), attempts = attempts + 1
		WHERE id = $1 AND state = 'pending'`, cmd, state); err != nil {
		t.Fatal(err)
	}
	if err := (&CompleteCommandWorker{deps: f.deps}).Work(ctx, osJob(CompleteCommand{InstanceID: id, CommandID: cmd}, 1)); err != nil {
		t.Fatal(err)
	}
}

func (f *osFixture) volumes(t *testing.T, id uuid.UUID) []volumes.Volume {
	t.Helper()
	pages, err := volumes.List(f.cloud.Volume, volumes.ListOpts{Name: "coffer-" + id.String(), AllTenants: true}).AllPages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vs, err := volumes.ExtractVolumes(pages)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// hugeFlavor is a flavor no host of the test cloud can hold (the
// provider's tests make the same one).
func hugeFlavor(t *testing.T, f *osFixture) string {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	const id = "coffer-test-huge"
	if _, err := flavors.Get(ctx, f.cloud.Compute, id).Extract(); err == nil {
		return id
	}
	disk := 1
	_, err := flavors.Create(ctx, f.cloud.Compute, flavors.CreateOpts{
		ID: id, Name: "coffer.test.huge", VCPUs: 100000, RAM: 64 << 20, Disk: &disk,
	}).Extract()
	if err != nil && !strings.Contains(err.Error(), "409") {
		t.Fatal(err)
	}
	return id
}

// TestApplyAccessToSecurityGroup: the job makes the server's security
// group open the datastore's port to exactly the stored CIDRs, whatever
// they were; the latest update wins; an instance still building waits for
// its server.
func TestApplyAccessToSecurityGroup(t *testing.T) {
	t.Parallel()
	f := newOSFixture(t)
	ctx := testCtx(t, 3*time.Minute)
	id, srv := f.server(t, "1", []string{"10.0.0.0/8"})
	if got := f.ingress(t, id); !slices.Equal(got, []string{"10.0.0.0/8"}) || srv.Port != 5432 {
		t.Fatalf("created with ingress from %v (port %d)", got, srv.Port)
	}
	w := &ApplyAccessWorker{deps: f.deps}
	for _, cidrs := range [][]string{{"192.0.2.0/24", "198.51.100.7/32"}, {}, {"203.0.113.0/24"}} {
		if _, err := f.deps.Pool.Exec(ctx, `UPDATE instance SET access_allowed_cidrs = $2 WHERE id = $1`, id, cidrs); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := w.Work(ctx, osJob(ApplyAccess{InstanceID: id}, 1)); err != nil {
			t.Fatal(err)
		}
		t.Logf("applied %v in %s", cidrs, time.Since(t0).Round(time.Millisecond))
		want := slices.Clone(cidrs)
		sort.Strings(want)
		if got := f.ingress(t, id); !slices.Equal(got, want) {
			t.Errorf("after applying %v: ingress from %v", cidrs, got)
		}
	}
	if inst := f.row(t, id); inst.FaultAt != nil {
		t.Errorf("fault recorded: %q", inst.FaultMessage)
	}

	// Building, no server yet: snooze until it exists.
	building := uuid.New()
	if _, err := f.deps.Pool.Exec(ctx, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task, access_allowed_cidrs)
		SELECT $1, 'p1', 'b', '1', 1, id, 'BUILDING', '{10.1.0.0/16}' FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, building); err != nil {
		t.Fatal(err)
	}
	var snooze *rivertype.JobSnoozeError
	if err := w.Work(ctx, osJob(ApplyAccess{InstanceID: building}, 1)); !errors.As(err, &snooze) {
		t.Errorf("access of an instance without its server yet: %v; want a snooze", err)
	}
	// Failed without a server: nothing to do.
	if _, err := f.deps.Pool.Exec(ctx, `UPDATE instance SET task = 'ERROR_BUILDING_SERVER' WHERE id = $1`, building); err != nil {
		t.Fatal(err)
	}
	if err := w.Work(ctx, osJob(ApplyAccess{InstanceID: building}, 1)); err != nil {
		t.Errorf("access of a failed build: %v", err)
	}
}

// ingress lists the remote prefixes of the instance's security group's
// ingress rules, checking each opens only TCP to the datastore's port.
func (f *osFixture) ingress(t *testing.T, id uuid.UUID) []string {
	t.Helper()
	pages, err := groups.List(f.cloud.Network, groups.ListOpts{Name: "coffer-" + id.String()}).AllPages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	gs, err := groups.ExtractGroups(pages)
	if err != nil || len(gs) != 1 {
		t.Fatalf("security groups of %s: %d, %v", id, len(gs), err)
	}
	var out []string
	for _, r := range gs[0].Rules {
		if r.Direction != "ingress" {
			continue
		}
		if r.Protocol != "tcp" || r.PortRangeMin != 5432 || r.PortRangeMax != 5432 {
			t.Errorf("rule opens more than TCP 5432: %+v", r)
		}
		out = append(out, r.RemoteIPPrefix)
	}
	sort.Strings(out)
	return out
}

// TestComputeStatusFromNova: a server Nova puts in ERROR makes the
// instance ERROR with Nova's fault; back to ACTIVE it reads ACTIVE again;
// a server gone reads SHUTDOWN; a building instance whose server failed is
// failed as provisioning would.
func TestComputeStatusFromNova(t *testing.T) {
	t.Parallel()
	f := newOSFixture(t)
	ctx := testCtx(t, 5*time.Minute)
	id, srv := f.server(t, "1", nil)
	statusOf := func(inst store.Instance) string {
		return status.Status(status.Instance{Task: inst.Task, ComputeStatus: inst.ComputeStatus, ServiceStatus: inst.ServiceStatus, HeartbeatAt: inst.HeartbeatAt})
	}
	if err := RefreshComputeStatusNow(ctx, f.deps); err != nil {
		t.Fatal(err)
	}
	if inst := f.row(t, id); statusOf(inst) != "ACTIVE" || inst.FaultAt != nil {
		t.Fatalf("unchanged server: %s, fault %q", statusOf(inst), inst.FaultMessage)
	}

	// An operator (or Nova) puts the server in ERROR.
	if err := servers.ResetState(ctx, f.cloud.Compute, srv.ID, servers.StateError).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := (&RefreshComputeStatusWorker{deps: f.deps}).Work(ctx, osJob(RefreshComputeStatus{}, 1)); err != nil {
		t.Fatal(err)
	}
	inst := f.row(t, id)
	if statusOf(inst) != "ERROR" || inst.ComputeStatus != provider.StatusError || !strings.HasPrefix(inst.FaultMessage, "The server is in ERROR: ") {
		t.Errorf("server in ERROR: status %s compute %s fault %q", statusOf(inst), inst.ComputeStatus, inst.FaultMessage)
	}
	if err := servers.ResetState(ctx, f.cloud.Compute, srv.ID, servers.StateActive).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := RefreshComputeStatusNow(ctx, f.deps); err != nil {
		t.Fatal(err)
	}
	if inst := f.row(t, id); statusOf(inst) != "ACTIVE" {
		t.Errorf("server back to ACTIVE: instance %s", statusOf(inst))
	}

	// A server that fails to build gets Nova's fault: a flavor no host
	// holds ("No valid host was found").
	building := uuid.New()
	if _, err := f.deps.Pool.Exec(ctx, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task)
		SELECT $1, 'p1', 'b', '1', 1, id, 'BUILDING' FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, building); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.p.DeleteServer(context.Background(), building.String()) })
	bad, err := f.p.CreateServer(ctx, provider.ServerSpec{
		InstanceID: building.String(), Name: "b", FlavorID: hugeFlavor(t, f), VolumeSizeGB: 1, Datastore: "postgresql",
		Version: "16", Image: f.cloud.Vars["OS_TEST_IMAGE_ID"],
		Agent: protocol.AgentConfig{InstanceID: building.String(), Token: building.String() + ".x", Datastore: "postgresql"},
	})
	if err != nil || bad.Status != provider.StatusError || bad.Fault == "" {
		t.Fatalf("server on a flavor no host holds: %+v %v", bad, err)
	}
	t.Logf("Nova's fault: %s", bad.Fault)
	// Recorded as BUILD (as if provisioning had stopped before it looked).
	if _, err := f.deps.Pool.Exec(ctx, `UPDATE instance SET server_id = $2 WHERE id = $1`, building, bad.ID); err != nil {
		t.Fatal(err)
	}
	if err := RefreshComputeStatusNow(ctx, f.deps); err != nil {
		t.Fatal(err)
	}
	inst = f.row(t, building)
	if inst.Task != status.TaskErrorServer || statusOf(inst) != "ERROR" || !strings.Contains(inst.FaultMessage, bad.Fault) {
		t.Errorf("building instance whose server failed: task %s status %s fault %q", inst.Task, statusOf(inst), inst.FaultMessage)
	}

	// The server is deleted behind Coffer's back.
	if err := servers.Delete(ctx, f.cloud.Compute, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := servers.Get(ctx, f.cloud.Compute, srv.ID).Extract(); err != nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err := RefreshComputeStatusNow(ctx, f.deps); err != nil {
		t.Fatal(err)
	}
	if inst := f.row(t, id); statusOf(inst) != "SHUTDOWN" || !strings.Contains(inst.FaultMessage, "no longer exists") {
		t.Errorf("server gone: status %s fault %q", statusOf(inst), inst.FaultMessage)
	}
}
