package openstack

import (
	"context"
	"fmt"
	"strconv"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// ResizeServer moves the instance's server to flavorID: Nova resize, wait
// for VERIFY_RESIZE, check the server has the new flavor, confirm. A
// resize that comes back with another flavor, or whose confirm fails, is
// reverted. Called again after a crash it picks up wherever the server
// is: confirming a pending resize, waiting for one in progress, or
// returning at once if the server has the flavor already.
func (p *Provider) ResizeServer(ctx context.Context, instanceID, flavorID string) (provider.Server, error) {
	srv, err := p.resizeServer(ctx, instanceID, flavorID)
	if err != nil {
		return provider.Server{}, fmt.Errorf("resize server for %s to flavor %s: %w", instanceID, flavorID, err)
	}
	return srv, nil
}

// transitional statuses end by themselves; a resize waits them out.
var transitional = map[string]bool{
	"BUILD": true, "REBUILD": true, "RESIZE": true, "REVERT_RESIZE": true,
	"REBOOT": true, "HARD_REBOOT": true, "MIGRATING": true,
}

func (p *Provider) resizeServer(ctx context.Context, instanceID, flavorID string) (provider.Server, error) {
	name, err := p.name(instanceID)
	if err != nil {
		return provider.Server{}, err
	}
	unlock, err := p.locks.lock(ctx, instanceID)
	if err != nil {
		return provider.Server{}, err
	}
	defer unlock()
	want, err := p.flavor(ctx, flavorID)
	if err != nil {
		return provider.Server{}, err
	}
	srv, err := p.findServer(ctx, name)
	if err != nil {
		return provider.Server{}, err
	}
	if srv == nil {
		return provider.Server{}, provider.ErrNotFound
	}
	// Since compute 2.47 a server shows its flavor's name, not its id;
	// Nova's flavor names are unique.
	flavorName := func(s *servers.Server) string { name, _ := s.Flavor["original_name"].(string); return name }
	requested := false
	for {
		switch {
		case transitional[srv.Status]:
			// wait below
		case srv.Status == "VERIFY_RESIZE" && flavorName(srv) == want.Name:
			if err := servers.ConfirmResize(ctx, p.compute, srv.ID).ExtractErr(); err != nil {
				cause := fmt.Errorf("confirm resize: %w", refusal("nova", err))
				if rerr := servers.RevertResize(ctx, p.compute, srv.ID).ExtractErr(); rerr != nil {
					return provider.Server{}, fmt.Errorf("%w (and reverting failed: %v)", cause, rerr)
				}
				return provider.Server{}, fmt.Errorf("%w; reverted to flavor %s", cause, flavorName(srv))
			}
		case srv.Status == "VERIFY_RESIZE":
			// Resized to something else (an earlier call for another
			// flavor): undo it, then resize as asked.
			if err := servers.RevertResize(ctx, p.compute, srv.ID).ExtractErr(); err != nil {
				return provider.Server{}, fmt.Errorf("revert resize to %s: %w", flavorName(srv), err)
			}
			requested = false
		case (srv.Status == "ACTIVE" || srv.Status == "SHUTOFF") && flavorName(srv) == want.Name:
			addr, err := p.address(ctx, name)
			if err != nil {
				return provider.Server{}, err
			}
			p.logger.InfoContext(ctx, "openstack provider: server resized", "instance_id", instanceID, "server_id", srv.ID, "flavor", want.ID)
			return view(srv, addr, metaPortOf(srv)), nil
		case srv.Status == "ACTIVE" || srv.Status == "SHUTOFF":
			if requested {
				// Back on the old flavor without asking: Nova gave up
				// (e.g. no host for the new flavor).
				return provider.Server{}, fmt.Errorf("nova did not resize the server (%s); it is %s on flavor %s again, "+
					"e.g. because no host can hold flavor %s", p.lastActionMessage(ctx, srv.ID, "resize"), srv.Status, flavorName(srv), want.Name)
			}
			if err := servers.Resize(ctx, p.compute, srv.ID, servers.ResizeOpts{FlavorRef: want.ID}).ExtractErr(); err != nil {
				return provider.Server{}, fmt.Errorf("request resize: %w", refusal("nova", err))
			}
			requested = true
			// Nova may give up (no host) before the first look sees the
			// resize; any settled state from now on is its outcome.
			srv.Status = "RESIZE"
		case srv.Status == "ERROR":
			return provider.Server{}, fmt.Errorf("server %s is in ERROR: %s", srv.ID, srv.Fault.Message)
		default:
			return provider.Server{}, fmt.Errorf("server %s is %s; it cannot be resized now", srv.ID, srv.Status)
		}
		if srv, err = p.waitChange(ctx, srv); err != nil {
			return provider.Server{}, err
		}
	}
}

// waitChange waits until the server's status or task differs from the one
// seen, and it is in no transitional status.
func (p *Provider) waitChange(ctx context.Context, seen *servers.Server) (*servers.Server, error) {
	var srv *servers.Server
	err := poll(ctx, "server "+seen.ID+" to change state", func() (bool, error) {
		s, err := servers.Get(ctx, p.compute, seen.ID).Extract()
		if err != nil {
			return false, fmt.Errorf("get server %s: %w", seen.ID, err)
		}
		srv = s
		changed := s.Status != seen.Status || s.TaskState != seen.TaskState || transitional[seen.Status]
		return changed && !transitional[s.Status] && s.TaskState == "", nil
	})
	return srv, err
}

// lastActionMessage describes the outcome of the server's latest action
// named action as Nova recorded it. Nova keeps the reason in the action's
// events, which only admins may read; the service user sees "Error".
func (p *Provider) lastActionMessage(ctx context.Context, serverID, action string) string {
	pages, err := instanceactions.List(p.compute, serverID, nil).AllPages(ctx)
	if err != nil {
		return "no instance action readable"
	}
	acts, err := instanceactions.ExtractInstanceActions(pages)
	if err != nil {
		return "no instance action readable"
	}
	for _, a := range acts { // newest first
		if a.Action == action {
			return fmt.Sprintf("instance action %s %s: %s", a.Action, a.RequestID, cmpOr(a.Message, "no message"))
		}
	}
	return "no " + action + " action recorded"
}

// metaPortOf is the datastore port recorded on the server.
func metaPortOf(s *servers.Server) int {
	port, _ := strconv.Atoi(s.Metadata[metaPort])
	return port
}
