package openstack

import (
	"maps"
	"strings"
	"testing"
)

// TestConfigFromEnv needs no cloud (and cannot be parallel: t.Setenv).
func TestConfigFromEnv(t *testing.T) {
	for k, v := range map[string]string{
		"COFFER_OS_AUTH_URL":     "https://keystone.example:5000/v3",
		"COFFER_OS_USERNAME":     "coffer",
		"COFFER_OS_PASSWORD":     "secret",
		"COFFER_OS_PROJECT_NAME": "service",
		"COFFER_OS_NETWORK_ID":   "net-1",
		"COFFER_OS_IMAGES":       "postgresql=tag:coffer-postgresql, redis:7=abc",
		"COFFER_OS_REGION":       "RegionTwo",
	} {
		t.Setenv(k, v)
	}
	for _, k := range []string{"COFFER_OS_USER_DOMAIN_NAME", "COFFER_OS_PROJECT_DOMAIN_NAME", "COFFER_OS_INTERFACE",
		"COFFER_OS_AGENT_PATH", "COFFER_OS_NAME_PREFIX", "COFFER_OS_VOLUME_TYPE", "COFFER_OS_AVAILABILITY_ZONE", "COFFER_OS_CACERT"} {
		t.Setenv(k, "")
	}
	c, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.UserDomainName != "Default" || c.ProjectDomainName != "Default" || c.Interface != "public" ||
		c.AgentPath != "/usr/local/bin/coffer-agent" || c.NamePrefix != "coffer-" || c.Region != "RegionTwo" ||
		!maps.Equal(c.Images, map[string]string{"postgresql": "tag:coffer-postgresql", "redis:7": "abc"}) {
		t.Fatalf("ConfigFromEnv = %+v", c)
	}

	t.Setenv("COFFER_OS_IMAGES", "postgresql")
	if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), "COFFER_OS_IMAGES") {
		t.Fatalf("bad COFFER_OS_IMAGES: %v", err)
	}
	t.Setenv("COFFER_OS_IMAGES", "")
	t.Setenv("COFFER_OS_NETWORK_ID", "")
	t.Setenv("COFFER_OS_PASSWORD", "")
	if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), "COFFER_OS_PASSWORD, COFFER_OS_NETWORK_ID") {
		t.Fatalf("missing variables: %v", err)
	}
}
