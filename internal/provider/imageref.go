package provider

import (
	"fmt"
	"net/url"
	"strings"
)

// An image reference names the image a server boots: an image id, or
// "tag:T1,T2,..." for the newest image carrying all the tags T1, T2, ...
// (each path-escaped, so that a tag may hold a comma). A datastore version
// names its image either way (Trove's image and image_tags); so does
// COFFER_OS_IMAGES.

// VersionImageRef is the image reference of a datastore version: its
// image id when it has one (it wins, as in Trove), else its image tags;
// empty when it has neither, and the provider's configured image applies.
func VersionImageRef(image string, tags []string) string {
	if image != "" || len(tags) == 0 {
		return image
	}
	esc := make([]string, len(tags))
	for i, t := range tags {
		esc[i] = url.PathEscape(t)
	}
	return "tag:" + strings.Join(esc, ",")
}

// ImageRefTags returns the tags of a "tag:" reference; ok is false for an
// image id.
func ImageRefTags(ref string) (tags []string, ok bool, err error) {
	list, ok := strings.CutPrefix(ref, "tag:")
	if !ok {
		return nil, false, nil
	}
	for t := range strings.SplitSeq(list, ",") {
		tag, err := url.PathUnescape(t)
		if err != nil || tag == "" {
			return nil, true, fmt.Errorf("image reference %q: %q is not a tag", ref, t)
		}
		tags = append(tags, tag)
	}
	return tags, true, nil
}
