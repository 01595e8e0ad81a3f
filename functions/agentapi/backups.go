package agentapi

// The agent's side of backups: grants (short-lived URLs for one object),
// segment reports and progress, for backups the calling instance is taking
// or restoring from — anything else is 404, so an agent learns nothing of
// other backups.
//
// Status: a backup is NEW until its agent's first request (grant, segment
// report or progress), BUILDING while it streams and uploads, SAVING from
// the command's success until the control plane has checked every segment
// in the store and written the manifest (jobs.FinalizeBackup), then
// COMPLETED. Grants and reports are refused once the backup is SAVING.

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/jobs"
)

// maxSegments bounds a segment index (a million 64 MiB segments: 64 TiB).
const maxSegments = 1_000_000

// backupRef is the backup and segment a request names.
type backupRef struct {
	backup store.Backup
	index  int
}

// loadBackup reads the backup and segment index of a request's path; ok is
// false when the answer has been written (400 or 404).
func (s *Server) loadBackup(w http.ResponseWriter, r *http.Request, withIndex bool) (backupRef, bool) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "no such backup", http.StatusNotFound)
		return backupRef{}, false
	}
	ref := backupRef{}
	if withIndex {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n >= maxSegments {
			http.Error(w, "bad segment index", http.StatusBadRequest)
			return backupRef{}, false
		}
		ref.index = n
	}
	b, err := store.New(s.Pool).GetBackupAnyProject(r.Context(), id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && b.DeletedAt != nil) {
		http.Error(w, "no such backup", http.StatusNotFound)
		return backupRef{}, false
	}
	if err != nil {
		s.unavailable(w, r, "load backup", err)
		return backupRef{}, false
	}
	ref.backup = b
	return ref, true
}

// taking reports whether the caller is the instance taking b right now:
// b is its backup, still streaming, and its command is leased (the agent
// is running it).
func (s *Server) taking(r *http.Request, b store.Backup) (bool, error) {
	caller := instanceID(r)
	if !b.InstanceID.Valid || b.InstanceID.UUID != caller || !b.CommandID.Valid {
		return false, nil
	}
	if b.Status != jobs.BackupNew && b.Status != jobs.BackupBuilding {
		return false, nil
	}
	cmd, err := store.New(s.Pool).GetAgentCommand(r.Context(), store.GetAgentCommandParams{ID: b.CommandID.UUID, InstanceID: caller})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return cmd.State == "leased", nil
}

// mustBeTaking answers 404 (503 if it cannot tell) unless the caller is
// taking b (taking); it reports whether the request may go on.
func (s *Server) mustBeTaking(w http.ResponseWriter, r *http.Request, b store.Backup) bool {
	ok, err := s.taking(r, b)
	if err != nil {
		s.unavailable(w, r, "check backup", err)
		return false
	}
	if !ok {
		http.Error(w, "no such backup", http.StatusNotFound)
	}
	return ok
}

func (s *Server) segmentGrant(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.loadBackup(w, r, true)
	if !ok {
		return
	}
	var req protocol.SegmentGrantRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		http.Error(w, "bad grant request", http.StatusBadRequest)
		return
	}
	b, ctx := ref.backup, r.Context()
	if s.Store == nil {
		http.Error(w, "no object store is configured", http.StatusServiceUnavailable)
		return
	}
	key := jobs.SegmentKey(b.Prefix, ref.index)
	ttl := jobs.Backups().GrantTTL
	switch req.Method {
	case http.MethodPut:
		// Guests upload only new backups, which go to the default store.
		if loc := jobs.Backups().Location; b.Location != loc {
			http.Error(w, fmt.Sprintf("backup is in object store %q, this deployment serves %q", b.Location, loc), http.StatusConflict)
			return
		}
		if !s.mustBeTaking(w, r, b) {
			return
		}
		if req.Size <= 0 || req.Size > b.SegmentSize {
			http.Error(w, fmt.Sprintf("segment size must be 1 to %d bytes", b.SegmentSize), http.StatusBadRequest)
			return
		}
		if req.SHA256 != "" && !validSHA256(req.SHA256) {
			http.Error(w, "sha256 must be 64 lowercase hex digits", http.StatusBadRequest)
			return
		}
		// The container is made sure of at each backup's first segment
		// (so one deleted behind Coffer's back comes back with the next
		// backup), and for other segments once per server.
		if _, known := s.containers.Load(b.Location + "/" + b.Container); !known || ref.index == 0 {
			if err := s.Store.EnsureContainer(ctx, b.Container); err != nil {
				s.unavailable(w, r, "create container "+b.Container, err)
				return
			}
			s.containers.Store(b.Location+"/"+b.Container, true)
		}
		if err := store.New(s.Pool).StartBackupProgress(ctx, b.ID); err != nil {
			s.unavailable(w, r, "record backup progress", err)
			return
		}
		g, err := s.Store.GrantPut(ctx, b.Container, key, req.Size, ttl)
		if err != nil {
			s.unavailable(w, r, "grant upload", err)
			return
		}
		writeJSON(w, protocol.Grant{Method: g.Method, URL: g.URL, Header: g.Header, Expires: g.Expires})
	case http.MethodGet:
		in, err := store.New(s.Pool).InRestoreChain(ctx, store.InRestoreChainParams{InstanceID: instanceID(r), BackupID: b.ID})
		if err != nil {
			s.unavailable(w, r, "check restore chain", err)
			return
		}
		if !in || b.Status != jobs.BackupCompleted || ref.index >= int(b.SegmentCount) {
			http.Error(w, "no such backup", http.StatusNotFound)
			return
		}
		// Restores read from wherever the backup is (a copy may be in
		// another location than new backups go to).
		st, ok := jobs.StoreAt(s.Locations, s.Store, b.Location)
		if !ok {
			http.Error(w, fmt.Sprintf("backup is in object store %q, which this deployment does not serve", b.Location), http.StatusConflict)
			return
		}
		g, err := st.GrantGet(ctx, b.Container, key, ttl)
		if err != nil {
			s.unavailable(w, r, "grant download", err)
			return
		}
		writeJSON(w, protocol.Grant{Method: g.Method, URL: g.URL, Header: g.Header, Expires: g.Expires})
	default:
		http.Error(w, "method must be PUT or GET", http.StatusBadRequest)
	}
}

func (s *Server) segmentDone(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.loadBackup(w, r, true)
	if !ok {
		return
	}
	var rep protocol.SegmentReport
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&rep); err != nil {
		http.Error(w, "bad segment report", http.StatusBadRequest)
		return
	}
	b := ref.backup
	if !s.mustBeTaking(w, r, b) {
		return
	}
	if rep.Size <= 0 || rep.Size > b.SegmentSize || !validSHA256(rep.SHA256) || rep.RawBytesDone < 0 || len(rep.ETag) > 256 {
		http.Error(w, fmt.Sprintf("a segment report needs a size of 1 to %d bytes and a sha256 of 64 lowercase hex digits", b.SegmentSize), http.StatusBadRequest)
		return
	}
	err := pgx.BeginFunc(r.Context(), s.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		if err := q.UpsertBackupSegment(r.Context(), store.UpsertBackupSegmentParams{
			BackupID: b.ID, Index: int32(ref.index), Size: rep.Size, Sha256: rep.SHA256, Etag: rep.ETag,
		}); err != nil {
			return err
		}
		if err := q.SetBackupBytesDone(r.Context(), store.SetBackupBytesDoneParams{ID: b.ID, BytesDone: rep.RawBytesDone}); err != nil {
			return err
		}
		return q.StartBackupProgress(r.Context(), b.ID)
	})
	if err != nil {
		s.unavailable(w, r, "record segment", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) backupProgress(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.loadBackup(w, r, false)
	if !ok {
		return
	}
	var p protocol.BackupProgress
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&p); err != nil || p.EstimatedBytes < 0 {
		http.Error(w, "bad progress report", http.StatusBadRequest)
		return
	}
	b := ref.backup
	if !s.mustBeTaking(w, r, b) {
		return
	}
	err := pgx.BeginFunc(r.Context(), s.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		if err := q.SetBackupEstimate(r.Context(), store.SetBackupEstimateParams{ID: b.ID, EstimatedBytes: p.EstimatedBytes}); err != nil {
			return err
		}
		return q.StartBackupProgress(r.Context(), b.ID)
	})
	if err != nil {
		s.unavailable(w, r, "record backup progress", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// mountObjects serves the file object store's signed URLs (the grants of a
// file store point here) when the store is a file store. The signature in
// the URL is the authentication: no bearer token.
func (s *Server) mountObjects(mux *http.ServeMux) {
	if h, ok := s.Store.(interface{ Handler() http.Handler }); ok {
		mux.Handle(objectsPath, h.Handler())
		return
	}
	// A file store may be a copy location only (one file store at most:
	// locations are named by kind).
	for _, name := range s.Locations.Names() {
		l, _ := s.Locations.Get(name)
		if h, ok := l.Store.(interface{ Handler() http.Handler }); ok {
			mux.Handle(objectsPath, h.Handler())
			return
		}
	}
}

// objectsPath is where the file store's grants point.
const objectsPath = objectstore.ObjectsPath

func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.Logger.ErrorContext(r.Context(), what, "instance_id", instanceID(r), "err", err)
	http.Error(w, "unavailable", http.StatusServiceUnavailable)
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && s == strings.ToLower(s)
}
