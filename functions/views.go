package functions

import (
	"context"
	"net/url"
	"strconv"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/openapi"
)

// links returns Trove's self and bookmark links of a resource.
func links(ctx context.Context, tenant, collection, id string) []openapi.Link {
	base := baseURL(ctx)
	return []openapi.Link{
		{Href: base + "/v1.0/" + tenant + "/" + collection + "/" + url.PathEscape(id), Rel: "self"},
		{Href: base + "/" + collection + "/" + url.PathEscape(id), Rel: "bookmark"},
	}
}

// nextLink is the rel=next pagination link: the request's URL with the
// marker replaced.
func nextLink(ctx context.Context, path string, query url.Values, marker string) []openapi.Link {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("marker", marker)
	return []openapi.Link{{Href: baseURL(ctx) + path + "?" + q.Encode(), Rel: "next"}}
}

// pageSize applies Trove's default page size and cap.
func pageSize(limit int, max int) int {
	if limit <= 0 || limit > max {
		return max
	}
	return limit
}

// idMarker parses a page marker that is the id of the previous page's last
// row ("" → no marker); anything else is Trove's 400.
func idMarker(marker string) (uuid.NullUUID, error) {
	if marker == "" {
		return uuid.NullUUID{}, nil
	}
	m, err := uuid.Parse(marker)
	if err != nil {
		return uuid.NullUUID{}, openapi.BadRequest("Invalid marker '%s'.", marker)
	}
	return uuid.NullUUID{UUID: m, Valid: true}, nil
}

// flavorID renders a flavor id as Trove does: an integer when all digits
// without a leading zero, otherwise null (with the id in str_id).
func flavorID(id string) *int {
	if id == "" || (len(id) > 1 && id[0] == '0') {
		return nil
	}
	n, err := strconv.Atoi(id)
	if err != nil || n < 0 {
		return nil
	}
	return &n
}
