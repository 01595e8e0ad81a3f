package jobs

import (
	"context"
	"fmt"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// versionImageRef is the image reference (provider.VersionImageRef) the
// instance's datastore version names: its image id, else its image tags,
// which the instance row does not carry.
func versionImageRef(ctx context.Context, q *store.Queries, row store.GetInstanceAnyProjectRow) (string, error) {
	if row.VersionImage != "" {
		return row.VersionImage, nil
	}
	v, err := q.GetDatastoreVersion(ctx, row.Instance.DatastoreVersionID)
	if err != nil {
		return "", fmt.Errorf("load datastore version %s: %w", row.Instance.DatastoreVersionID, err)
	}
	return provider.VersionImageRef(v.Image, v.ImageTags), nil
}
