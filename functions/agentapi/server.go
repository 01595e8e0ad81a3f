// Package agentapi is the control plane's side of the guest channel: the
// HTTPS endpoints guest agents long-poll for commands, post results and
// heartbeats to (wire format in agent/protocol). Agents authenticate with
// their per-instance credential; a parked poll holds no Postgres connection
// (Hub), and a command's result enqueues its continuation job in the
// transaction that records it.
package agentapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/jobs"
)

// Server serves the agent API.
type Server struct {
	Pool   *pgxpool.Pool
	River  *river.Client[pgx.Tx]
	Hub    *Hub
	Logger *slog.Logger
	// Store is where backups live (backups.go); nil: no backups.
	Store objectstore.Store
	// Locations names every store a backup may be in; restore grants are
	// signed by the store of the backup's location. nil: Store only.
	Locations *objectstore.Registry

	// containers remembers the containers known to exist (backups.go).
	containers sync.Map
}

// maxBody bounds what an agent may post.
const maxBody = 1 << 20

// Handler returns the agent API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.PathCommands, s.authenticated(s.poll))
	mux.HandleFunc("POST "+protocol.PathResult, s.authenticated(s.result))
	mux.HandleFunc("POST "+protocol.PathHeartbeat, s.authenticated(s.heartbeat))
	mux.HandleFunc("POST "+protocol.PathSegmentGrant, s.authenticated(s.segmentGrant))
	mux.HandleFunc("POST "+protocol.PathSegmentDone, s.authenticated(s.segmentDone))
	mux.HandleFunc("POST "+protocol.PathBackupProgress, s.authenticated(s.backupProgress))
	s.mountObjects(mux)
	return mux
}

type instanceKey struct{}

// authenticated checks "Authorization: Bearer <instance id>.<secret>"
// against the stored hash of the instance's current credential.
func (s *Server) authenticated(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		idPart, _, _ := strings.Cut(token, ".")
		id, err := uuid.Parse(idPart)
		if !ok || err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		stored, err := store.New(s.Pool).GetInstanceAgentToken(r.Context(), id)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			s.Logger.ErrorContext(r.Context(), "agent auth", "instance_id", id, "err", err)
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		if len(stored) == 0 || subtle.ConstantTimeCompare(stored, auth.Hash(token)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), instanceKey{}, id)))
	}
}

func instanceID(r *http.Request) uuid.UUID { return r.Context().Value(instanceKey{}).(uuid.UUID) }

// poll hands the agent its next command, waiting up to ?wait= seconds for
// one to be inserted.
func (s *Server) poll(w http.ResponseWriter, r *http.Request) {
	id := instanceID(r)
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 0 {
			http.Error(w, "wait must be a number of seconds", http.StatusBadRequest)
			return
		}
		wait = min(time.Duration(secs)*time.Second, protocol.MaxWait)
	}
	// Subscribe before looking, so a command inserted between the look and
	// the wait still wakes us.
	wake, cancel := s.Hub.Subscribe(id.String())
	defer cancel()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		cmd, err := store.New(s.Pool).LeaseAgentCommand(r.Context(), id)
		if err == nil {
			writeJSON(w, protocol.Command{ID: cmd.ID.String(), Name: cmd.Name, Payload: cmd.Payload,
				LeaseSeconds: int(cmd.LeaseSeconds), Attempt: int(cmd.Attempts)})
			return
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			if r.Context().Err() == nil {
				s.Logger.ErrorContext(r.Context(), "lease agent command", "instance_id", id, "err", err)
				http.Error(w, "unavailable", http.StatusServiceUnavailable)
			}
			return
		}
		select {
		case <-wake:
		case <-deadline.C:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// continuation is the job that follows a command's result, if any.
func continuation(name string, instanceID, commandID uuid.UUID) river.JobArgs {
	if name == protocol.CommandPrepare {
		return jobs.CompletePrepare{InstanceID: instanceID, CommandID: commandID}
	}
	if jobs.HasCompleter(name) {
		return jobs.CompleteCommand{InstanceID: instanceID, CommandID: commandID}
	}
	return nil
}

// result records a command's outcome once and enqueues its continuation in
// the same transaction; a repeated post changes nothing.
func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id := instanceID(r)
	cmdID, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "bad command id", http.StatusBadRequest)
		return
	}
	var res protocol.Result
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&res); err != nil {
		http.Error(w, "bad result body", http.StatusBadRequest)
		return
	}
	state := "succeeded"
	if !res.OK {
		state = "failed"
	}
	resJSON, _ := json.Marshal(res)
	err = pgx.BeginFunc(r.Context(), s.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		cmd, err := q.CompleteAgentCommand(r.Context(), store.CompleteAgentCommandParams{
			ID: cmdID, InstanceID: id, State: state, Result: resJSON, Error: res.Error,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // already completed or cancelled
		}
		if err != nil {
			return fmt.Errorf("complete command %s: %w", cmdID, err)
		}
		if next := continuation(cmd.Name, id, cmdID); next != nil {
			if _, err := s.River.InsertTx(r.Context(), tx, next, nil); err != nil {
				return fmt.Errorf("enqueue continuation of %s: %w", cmdID, err)
			}
		}
		return nil
	})
	if err != nil {
		s.Logger.ErrorContext(r.Context(), "record agent result", "instance_id", id, "command_id", cmdID, "err", err)
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	id := instanceID(r)
	var hb protocol.Heartbeat
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&hb); err != nil {
		http.Error(w, "bad heartbeat body", http.StatusBadRequest)
		return
	}
	if hb.ServiceStatus == "" {
		hb.ServiceStatus = protocol.ServiceUnknown
	}
	if err := store.New(s.Pool).RecordHeartbeat(r.Context(), store.RecordHeartbeatParams{
		ID: id, ServiceStatus: hb.ServiceStatus, VolumeUsedBytes: hb.VolumeUsedBytes,
	}); err != nil {
		s.Logger.ErrorContext(r.Context(), "record heartbeat", "instance_id", id, "err", err)
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	if hb.Inventory != nil {
		inv, _ := json.Marshal(hb.Inventory)
		if err := store.New(s.Pool).RecordInventory(r.Context(), store.RecordInventoryParams{ID: id, Inventory: inv}); err != nil {
			s.Logger.ErrorContext(r.Context(), "record inventory", "instance_id", id, "err", err)
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
