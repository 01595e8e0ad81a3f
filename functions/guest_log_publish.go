package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/containers"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/objects"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Publishing guest logs (Trove's `log set --publish`, `log-publish`) into
// the caller's own Swift account, where `log tail` and `log save` read
// them with the caller's credentials.
//
// Trove hands the user's token to the guest, which uploads the log itself.
// Here the guest holds no credentials of anyone: the control plane reads
// the unpublished part of the log from the agent, a chunk of complete
// lines per command (protocol.CommandGuestLogRead), and writes it to the
// object store of the caller's catalog with the caller's token, for the
// duration of the request only. Objects are Trove's: container
// database_logs, `<instance>/<manager>-<log>/log-<UTC time>` of at most
// guestLogObjectMax bytes with X-Object-Meta-Lines (what `log tail` counts)
// and an expiry, plus the metafile. How much is published is recorded per
// log (guest_log_publication) after every object, so a publish that fails
// half way keeps what it stored and the next one goes on from there.
//
// Without Keystone (the built-in tokens) there is no catalog, hence no
// Swift of the caller's: publish and discard answer 501 as Trove does
// without a Swift endpoint.

const (
	// guestLogObjectMax is Trove's guest_log_limit: the largest object.
	guestLogObjectMax = 1 << 20
	// guestLogPublishMax bounds what one request publishes; the rest stays
	// pending (status Partial) for the next publish.
	guestLogPublishMax = 64 << 20
	// guestLogExpiry is Trove's guest_log_expiry (30 days).
	guestLogExpiry = 30 * 24 * time.Hour
	// guestLogPublishLease bounds a publish or discard of one log; a
	// second one meanwhile gets 409.
	guestLogPublishLease = 5 * time.Minute
	// guestLogReadWait is how long a read waits for the agent's answer.
	guestLogReadWait = 30 * time.Second
	// guestLogReadLease is the lease of one read command.
	guestLogReadLease = 30
)

// guestLogReadPoll paces the wait for the agent's answer to a read.
var guestLogReadPoll = 20 * time.Millisecond

func guestLogPrefix(inst uuid.UUID, manager, name string) string {
	return fmt.Sprintf("%s/%s-%s/", inst, manager, name)
}

func guestLogMetafile(inst uuid.UUID, manager, name string) string {
	return fmt.Sprintf("%s/%s-%s_metafile", inst, manager, name)
}

// userSwift is the caller's own object store, reached with the caller's
// token: the public object-store endpoint of Coffer's region in the
// caller's catalog.
func (d *Deps) userSwift(ctx context.Context) (*gophercloud.ServiceClient, error) {
	cat, ok := d.Auth.(auth.Catalog)
	if !ok {
		return nil, openapi.Errorf(http.StatusNotImplemented, "Log actions are not supported: publishing needs Keystone authentication and an object-store (Swift) service in the catalog.")
	}
	token := auth.TokenFrom(ctx)
	url, err := cat.UserEndpoint(ctx, token, "object-store", d.Region)
	switch {
	case errors.Is(err, auth.ErrNoEndpoint):
		return nil, openapi.Errorf(http.StatusNotImplemented, "Log actions are not supported: the catalog has no object-store (Swift) endpoint in region %s.", d.Region)
	case errors.Is(err, auth.ErrInvalidToken):
		return nil, openapi.Errorf(http.StatusUnauthorized, "The request you have made requires authentication.")
	case err != nil:
		d.Logger.ErrorContext(ctx, "guest log: catalog", "err", err)
		return nil, openapi.Errorf(http.StatusServiceUnavailable, "Authentication is unavailable, try again.")
	}
	pc := &gophercloud.ProviderClient{HTTPClient: http.Client{Timeout: time.Minute}}
	pc.SetToken(token)
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: gophercloud.NormalizeURL(url)}, nil
}

// swiftFault turns a failure of the caller's Swift into Trove's faults:
// SwiftAuthError (401) when it refuses the caller, else SwiftConnectionError
// (500, with the store's answer, which holds no secret).
func swiftFault(what string, err error) error {
	if gophercloud.ResponseCodeIs(err, http.StatusUnauthorized) || gophercloud.ResponseCodeIs(err, http.StatusForbidden) {
		return openapi.Errorf(http.StatusUnauthorized, "Swift refused the request (%s): check the roles of your project.", what)
	}
	return openapi.Errorf(http.StatusInternalServerError, "Swift: %s: %v", what, err)
}

// claimGuestLog takes the publish lease of one log; the returned function
// gives it back.
func (d *Deps) claimGuestLog(ctx context.Context, inst uuid.UUID, name string) (store.GuestLogPublication, func(), error) {
	q := d.queries()
	p, err := q.ClaimGuestLogPublication(ctx, store.ClaimGuestLogPublicationParams{
		InstanceID: inst, Name: name, LeaseSeconds: int32(guestLogPublishLease / time.Second)})
	if errors.Is(err, pgx.ErrNoRows) {
		return p, nil, openapi.Errorf(http.StatusConflict, "Log '%s' of instance %s is being published or discarded; try again when that is done.", name, inst)
	}
	if err != nil {
		return p, nil, d.internal(ctx, "guest log: claim", err)
	}
	return p, func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := q.ReleaseGuestLogPublication(ctx, store.ReleaseGuestLogPublicationParams{InstanceID: inst, Name: name}); err != nil {
			d.Logger.ErrorContext(ctx, "guest log: release", "instance_id", inst, "log", name, "err", err)
		}
	}, nil
}

// publishGuestLog publishes what the agent has beyond what was published,
// and returns the published size.
func (d *Deps) publishGuestLog(ctx context.Context, sc *gophercloud.ServiceClient, inst store.Instance, manager string, log protocol.GuestLog) (int64, error) {
	pub, release, err := d.claimGuestLog(ctx, inst.ID, log.Name)
	if err != nil {
		return 0, err
	}
	defer release()
	if _, err := containers.Create(ctx, sc, guestLogContainer, nil).Extract(); err != nil {
		return 0, swiftFault("create container "+guestLogContainer, err)
	}
	q := d.queries()
	offset := pub.Published
	var obj bytes.Buffer
	flush := func() error {
		if obj.Len() == 0 {
			return nil
		}
		name := guestLogPrefix(inst.ID, manager, log.Name) + "log-" + d.now().UTC().Format("2006-01-02T15:04:05.000000")
		_, err := objects.Create(ctx, sc, guestLogContainer, name, objects.CreateOpts{
			Content: bytes.NewReader(obj.Bytes()), ContentType: "text/plain; charset=utf-8", NoETag: true,
			Metadata:    map[string]string{"Lines": strconv.Itoa(bytes.Count(obj.Bytes(), []byte("\n")))},
			DeleteAfter: int64(guestLogExpiry / time.Second),
		}).Extract()
		if err != nil {
			return swiftFault("store "+name, err)
		}
		if err := q.SetGuestLogPublished(ctx, store.SetGuestLogPublishedParams{InstanceID: inst.ID, Name: log.Name, Published: offset}); err != nil {
			return d.internal(ctx, "guest log: record published", err)
		}
		obj.Reset()
		return nil
	}
	// The log is published up to where it ended when the publish began
	// (the first read's Size): lines written meanwhile wait for the next
	// publish. A statement log grows while it is read, not least by the
	// agent's own queries, so "until the end" might never come.
	end := int64(-1)
	for read := int64(0); read < guestLogPublishMax && (end < 0 || offset < end); {
		c, err := d.readGuestLog(ctx, inst.ID, protocol.GuestLogReadRequest{Name: log.Name, Offset: offset, Max: protocol.GuestLogReadMax})
		if err != nil {
			return 0, err
		}
		if c.Size < offset && offset > 0 && obj.Len() == 0 && end < 0 {
			// The file was truncated or replaced: publish the new one from
			// its start (Trove's "Rotated").
			offset = 0
			continue
		}
		if end < 0 {
			end = c.Size
		}
		if len(c.Data) == 0 {
			break
		}
		obj.Write(c.Data)
		offset += int64(len(c.Data))
		read += int64(len(c.Data))
		if obj.Len()+protocol.GuestLogReadMax > guestLogObjectMax {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	meta, _ := json.Marshal(map[string]any{"name": log.Name, "type": log.Type, "file": log.File, "published": offset,
		"container": guestLogContainer, "prefix": guestLogPrefix(inst.ID, manager, log.Name)})
	if _, err := objects.Create(ctx, sc, guestLogContainer, guestLogMetafile(inst.ID, manager, log.Name), objects.CreateOpts{
		Content: bytes.NewReader(meta), ContentType: "application/json", NoETag: true,
	}).Extract(); err != nil {
		return 0, swiftFault("store the metafile", err)
	}
	return offset, nil
}

// readGuestLog asks the agent for a chunk of a log and waits for it.
func (d *Deps) readGuestLog(ctx context.Context, inst uuid.UUID, req protocol.GuestLogReadRequest) (protocol.GuestLogChunk, error) {
	q := d.queries()
	id, err := jobs.QueueCommand(ctx, q, inst, protocol.CommandGuestLogRead, req, guestLogReadLease)
	if err != nil {
		return protocol.GuestLogChunk{}, d.internal(ctx, "guest log: read", err)
	}
	wait, cancel := context.WithTimeout(ctx, guestLogReadWait)
	defer cancel()
	for {
		cmd, err := q.GetAgentCommand(wait, store.GetAgentCommandParams{ID: id, InstanceID: inst})
		if err == nil && cmd.State != "pending" && cmd.State != "leased" {
			return d.guestLogChunk(ctx, cmd)
		}
		if err != nil && wait.Err() == nil {
			return protocol.GuestLogChunk{}, d.internal(ctx, "guest log: read", err)
		}
		select {
		case <-wait.Done():
			// Nobody is waiting for it any more.
			_, _ = q.CancelAgentCommand(context.WithoutCancel(ctx), id)
			return protocol.GuestLogChunk{}, openapi.Errorf(http.StatusServiceUnavailable,
				"The guest agent of instance %s did not answer within %s; try again.", inst, guestLogReadWait)
		case <-time.After(guestLogReadPoll):
		}
	}
}

// guestLogChunk decodes a read's result and drops it from the command:
// log lines are not kept in the control plane's database.
func (d *Deps) guestLogChunk(ctx context.Context, cmd store.AgentCommand) (protocol.GuestLogChunk, error) {
	var res protocol.Result
	var c protocol.GuestLogChunk
	err := json.Unmarshal(cmd.Result, &res)
	if err == nil && res.OK {
		err = json.Unmarshal(res.Output, &c)
	}
	if cerr := d.queries().ClearAgentCommandResult(ctx, store.ClearAgentCommandResultParams{ID: cmd.ID, InstanceID: cmd.InstanceID}); cerr != nil {
		d.Logger.WarnContext(ctx, "guest log: clear read result", "command_id", cmd.ID, "err", cerr)
	}
	switch {
	case cmd.State != "succeeded":
		return c, openapi.Errorf(http.StatusInternalServerError, "The guest agent could not read the log: %s", cmd.Error)
	case err != nil:
		return c, d.internal(ctx, "guest log: decode read", err)
	case c.Offset < 0 || c.Size < 0:
		return c, d.internal(ctx, "guest log: read", fmt.Errorf("agent answered offset %d size %d", c.Offset, c.Size))
	}
	return c, nil
}

// discardGuestLog removes a log's published objects and its metafile from
// the caller's Swift; the log is then unpublished again.
func (d *Deps) discardGuestLog(ctx context.Context, sc *gophercloud.ServiceClient, inst store.Instance, manager string, log protocol.GuestLog) error {
	_, release, err := d.claimGuestLog(ctx, inst.ID, log.Name)
	if err != nil {
		return err
	}
	defer release()
	names := []string{}
	pages, err := objects.List(sc, guestLogContainer, objects.ListOpts{Prefix: guestLogPrefix(inst.ID, manager, log.Name)}).AllPages(ctx)
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		// No container: nothing was ever published here.
	case err != nil:
		return swiftFault("list "+guestLogContainer, err)
	default:
		if names, err = objects.ExtractNames(pages); err != nil {
			return swiftFault("list "+guestLogContainer, err)
		}
	}
	for _, name := range append(names, guestLogMetafile(inst.ID, manager, log.Name)) {
		if _, err := objects.Delete(ctx, sc, guestLogContainer, name, nil).Extract(); err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return swiftFault("delete "+name, err)
		}
	}
	if err := d.queries().SetGuestLogPublished(ctx, store.SetGuestLogPublishedParams{InstanceID: inst.ID, Name: log.Name, Published: 0}); err != nil {
		return d.internal(ctx, "guest log: discard", err)
	}
	return nil
}

// withPublished sets each log's Published from what the control plane
// published of it; a file now smaller than that was replaced, and nothing
// of the new one is published.
func withPublished(logs []protocol.GuestLog, pubs []store.GuestLogPublication) []protocol.GuestLog {
	for i := range logs {
		logs[i].Published = 0
		for _, p := range pubs {
			if p.Name == logs[i].Name && p.Published <= logs[i].Size {
				logs[i].Published = p.Published
			}
		}
	}
	return logs
}
