package provider

import (
	"slices"
	"testing"
)

func TestVersionImageRef(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		image string
		tags  []string
		want  string
	}{
		{"", nil, ""},
		{"3f8e", []string{"a"}, "3f8e"},
		{"", []string{"postgresql"}, "tag:postgresql"},
		{"", []string{"postgresql", "v16,lts", "50%"}, "tag:postgresql,v16%2Clts,50%25"},
	} {
		ref := VersionImageRef(c.image, c.tags)
		if ref != c.want {
			t.Errorf("VersionImageRef(%q, %q) = %q, want %q", c.image, c.tags, ref, c.want)
			continue
		}
		tags, ok, err := ImageRefTags(ref)
		if err != nil || ok != (c.image == "" && len(c.tags) > 0) {
			t.Errorf("ImageRefTags(%q) = %q, %v, %v", ref, tags, ok, err)
		}
		if ok && !slices.Equal(tags, c.tags) {
			t.Errorf("ImageRefTags(%q) = %q, want %q", ref, tags, c.tags)
		}
	}
	for _, bad := range []string{"tag:", "tag:a,,b", "tag:%zz"} {
		if _, ok, err := ImageRefTags(bad); !ok || err == nil {
			t.Errorf("ImageRefTags(%q): ok %v, err %v; want a tag reference error", bad, ok, err)
		}
	}
}
