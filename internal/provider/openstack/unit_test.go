package openstack

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// Tests of the pieces that need no cloud.

func TestRefusal(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code int
		body string
		want string // "" = not a refusal
	}{
		{403, `{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 0 of 0 instances"}}`,
			"refused by the cloud: nova (403): Quota exceeded for instances: Requested 1, but already used 0 of 0 instances"},
		{409, `{"NeutronError": {"type": "IpAddressGenerationFailure", "message": "No more IP addresses available on network x.", "detail": ""}}`,
			"refused by the cloud: nova (409): No more IP addresses available on network x."},
		{400, `{"message": "flat"}`, "refused by the cloud: nova (400): flat"},
		{404, `<html>Not Found</html>`, "refused by the cloud: nova (404): <html>Not Found</html>"},
		{500, `{"computeFault": {"message": "oops"}}`, ""},
		{503, ``, ""},
	} {
		err := refusal("nova", gophercloud.ErrUnexpectedResponseCode{Actual: c.code, Body: []byte(c.body)})
		if c.want == "" {
			if errors.Is(err, provider.ErrRefused) {
				t.Errorf("%d is a refusal: %v", c.code, err)
			}
			continue
		}
		if !errors.Is(err, provider.ErrRefused) || err.Error() != c.want {
			t.Errorf("%d: %v, want %q", c.code, err, c.want)
		}
	}
	if err := refusal("nova", context.Canceled); err != context.Canceled {
		t.Errorf("a context error became %v", err)
	}
}

func TestWantedRules(t *testing.T) {
	t.Parallel()
	got, err := wantedRules([]string{"10.1.2.3/8", "192.0.2.7", "2001:db8::1/48", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[ingressRule]bool{
		{"IPv4", "10.0.0.0/8"}: true, {"IPv4", "192.0.2.7/32"}: true, {"IPv6", "2001:db8::/48"}: true,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("wantedRules = %v, want %v", got, want)
	}
	if _, err := wantedRules([]string{"10.0.0.0/33"}); !errors.Is(err, provider.ErrRefused) {
		t.Fatalf("a bad CIDR: %v", err)
	}
}

func TestKeyedMutex(t *testing.T) {
	t.Parallel()
	var k keyedMutex
	unlock, err := k.lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is independent; the same key waits, and gives up with
	// its context.
	unlockB, err := k.lock(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := k.lock(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock of a held key: %v", err)
	}
	got := make(chan struct{})
	go func() {
		u, err := k.lock(context.Background(), "a")
		if err == nil {
			u()
		}
		close(got)
	}()
	unlock()
	<-got
	if n := len(k.locks); n != 0 {
		t.Fatalf("%d locks left after every holder released", n)
	}
}

func TestComputeStatus(t *testing.T) {
	t.Parallel()
	for nova, want := range map[string]string{
		"ACTIVE": "ACTIVE", "BUILD": "BUILD", "ERROR": "ERROR", "SHUTOFF": "SHUTDOWN",
		"VERIFY_RESIZE": "RESIZE", "HARD_REBOOT": "REBOOT", "UNKNOWN": "UNKNOWN",
	} {
		if got := computeStatus(nova); got != want {
			t.Errorf("computeStatus(%s) = %s, want %s", nova, got, want)
		}
	}
}
