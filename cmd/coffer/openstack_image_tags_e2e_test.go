package main_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/coffer-dbaas/coffer/internal/provider/openstack/openstacktest"
)

// TestOpenStackVersionImageTags: a datastore version naming its image by
// tags only (Trove's image_tags) boots the Glance image carrying all of
// them; tags no image carries together refuse the create at the API
// (400, nothing created).
func TestOpenStackVersionImageTags(t *testing.T) {
	t.Parallel()
	cloud := openStackCloud(t)
	proj := newOSProject(t, cloud)
	c := proj.start(t)
	member, admin := c.creds.MemberToken, c.creds.AdminToken

	suffix := uuid.NewString()[:8]
	pgTag, versionTag, noTag := "coffer-pg-"+suffix, "coffer-v-"+suffix, "coffer-none-"+suffix
	imageID := uploadGlanceImage(t, cloud, "coffer-e2e-tags-"+suffix, pgTag, versionTag)
	for name, tags := range map[string][]string{"pg-tags": {pgTag, versionTag}, "pg-tags-none": {pgTag, noTag}} {
		code, body := c.api(t, "POST", "/mgmt/datastore-versions", admin, fmt.Sprintf(`{"version": {"name": %q,
			"datastore_name": "postgresql", "datastore_manager": "postgresql", "active": true, "image_tags": [%q, %q]}}`,
			name, tags[0], tags[1]))
		if code != 202 {
			t.Fatalf("add version %s with image_tags %q: %d %v", name, tags, code, body)
		}
	}
	create := func(version string) (int, map[string]any) {
		return c.api(t, "POST", "/instances", member, `{"instance": {"name": "tagged", "flavorRef": "1",
			"volume": {"size": 1}, "datastore": {"type": "postgresql", "version": "`+version+`"}}}`)
	}

	code, body := create("pg-tags-none")
	f, _ := body["badRequest"].(map[string]any)
	msg := fmt.Sprint(f["message"])
	if code != 400 || !strings.Contains(msg, "The image of datastore version 'pg-tags-none' is not available: no active image tagged") ||
		!strings.Contains(msg, noTag) {
		t.Fatalf("create on tags no image carries: %d %v", code, body)
	}
	t.Logf("refused: %s", msg)
	if got := proj.held(t); got != holdsNothing {
		t.Errorf("the refused create left in OpenStack: %s", got)
	}

	code, body = create("pg-tags")
	if code != 200 {
		t.Fatalf("create on tags: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if srvs := listServers(t, cloud, "coffer-"+id); len(srvs) == 1 {
			if got, _ := srvs[0].Image["id"].(string); got != imageID {
				t.Errorf("the server boots image %v, want the tagged %s", srvs[0].Image, imageID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no server in Nova within 3 minutes")
		}
		time.Sleep(time.Second)
	}
	// No agent runs for it, so it stays BUILD: reset, then delete (Trove's
	// force delete).
	if code, body := c.api(t, "POST", "/instances/"+id+"/action", admin, `{"reset_status": {}}`); code != 202 {
		t.Fatalf("reset_status: %d %v", code, body)
	}
	if code, body := c.api(t, "DELETE", "/instances/"+id, member, ""); code != 202 {
		t.Fatalf("delete: %d %v", code, body)
	}
	c.waitGone(t, id, 2*time.Minute)
	if got := proj.held(t); got != holdsNothing {
		t.Errorf("after delete OpenStack holds %s", got)
	}
}

// uploadGlanceImage uploads a small active public image carrying tags (as
// the cloud's admin), deleted when the test ends.
func uploadGlanceImage(t *testing.T, cloud *openstacktest.Cloud, name string, tags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v := cloud.Vars
	pc, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: v["OS_AUTH_URL"], Username: v["OS_USERNAME"], Password: v["OS_PASSWORD"],
		DomainName: "Default", TenantName: v["OS_PROJECT_NAME"], AllowReauth: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	glance, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: v["OS_REGION_NAME"]})
	if err != nil {
		t.Fatal(err)
	}
	public := images.ImageVisibilityPublic
	img, err := images.Create(ctx, glance, images.CreateOpts{
		Name: name, Tags: tags, ContainerFormat: "bare", DiskFormat: "raw", Visibility: &public,
	}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := images.Delete(ctx, glance, img.ID).ExtractErr(); err != nil {
			t.Errorf("delete image %s: %v", img.ID, err)
		}
	})
	if err := imagedata.Upload(ctx, glance, img.ID, bytes.NewReader(make([]byte, 1024))).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	return img.ID
}
