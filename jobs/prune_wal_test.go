package jobs

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func TestPruneWALArchives(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newBackupFixture(t)
	// backupAt makes a backup of inst that ended in status with its
	// backup starting at WAL file wal.
	backupAt := func(inst uuid.UUID, status, wal string, deleted bool) {
		t.Helper()
		b, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "b-" + wal})
		if err != nil {
			t.Fatal(err)
		}
		point, _ := json.Marshal(protocol.BackupPoint{StartWAL: wal, EndWAL: wal, Timeline: 1})
		f.exec(t, `UPDATE backup SET status = $2, point = $3, deleted_at = CASE WHEN $4 THEN now() END WHERE id = $1`, b.ID, status, point, deleted)
		f.exec(t, `UPDATE agent_command SET state = 'succeeded', payload = '{}' WHERE id = $1`, b.CommandID.UUID)
		f.exec(t, `UPDATE instance SET running_backup_id = NULL WHERE id = $1`, inst)
	}
	// prunes returns the open prune commands of inst.
	prunes := func(inst uuid.UUID) []protocol.PruneWALRequest {
		t.Helper()
		rows, err := f.pool.Query(ctx, `SELECT payload FROM agent_command WHERE instance_id = $1 AND name = 'prune_wal' AND state IN ('pending', 'leased')`, inst)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []protocol.PruneWALRequest
		for rows.Next() {
			var b []byte
			var r protocol.PruneWALRequest
			if err := rows.Scan(&b); err != nil || json.Unmarshal(b, &r) != nil {
				t.Fatalf("prune payload %s: %v", b, err)
			}
			out = append(out, r)
		}
		return out
	}

	none := f.activeInstance(t) // no backup: prune everything before now
	kept := f.activeInstance(t) // the oldest live COMPLETED backup is kept
	backupAt(kept, "COMPLETED", "000000010000000000000005", false)
	backupAt(kept, "COMPLETED", "000000010000000000000003", false)
	backupAt(kept, "COMPLETED", "000000010000000000000001", true) // deleted
	backupAt(kept, "FAILED", "000000010000000000000002", false)
	running := f.activeInstance(t)
	if _, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: running, Name: "running"}); err != nil {
		t.Fatal(err)
	}
	busy := f.activeInstance(t)
	f.exec(t, `UPDATE instance SET task = 'RESIZING' WHERE id = $1`, busy)
	stopped := f.activeInstance(t)
	f.exec(t, `UPDATE instance SET service_status = 'shutdown' WHERE id = $1`, stopped)

	n, err := PruneWALArchivesNow(ctx, f.deps)
	if err != nil || n != 2 {
		t.Fatalf("PruneWALArchivesNow = %d, %v; want 2 (the idle instances)", n, err)
	}
	if p := prunes(none); len(p) != 1 || p[0].Keep != nil {
		t.Errorf("instance without backups: %+v, want one prune keeping nothing", p)
	}
	if p := prunes(kept); len(p) != 1 || p[0].Keep == nil || p[0].Keep.StartWAL != "000000010000000000000003" {
		t.Errorf("instance with backups: %+v, want one prune keeping from 000000010000000000000003", p)
	}
	for name, id := range map[string]uuid.UUID{"running backup": running, "resizing": busy, "stopped": stopped} {
		if p := prunes(id); len(p) != 0 {
			t.Errorf("%s: prunes %+v", name, p)
		}
	}

	// An open prune is not queued again; once done, the next round does.
	if n, err := PruneWALArchivesNow(ctx, f.deps); err != nil || n != 0 {
		t.Errorf("second round = %d, %v; want 0 while the prunes are open", n, err)
	}
	f.exec(t, `UPDATE agent_command SET state = 'succeeded' WHERE instance_id = $1 AND name = 'prune_wal'`, none)
	if n, err := PruneWALArchivesNow(ctx, f.deps); err != nil || n != 1 || len(prunes(none)) != 1 {
		t.Errorf("third round = %d, %v; want the finished instance's prune again", n, err)
	}
}
