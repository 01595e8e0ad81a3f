package backupstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// A grant URL's query string is its credential (S3 X-Amz-Signature and
// X-Amz-Credential, Swift temp_url_sig, the file store's sig). Nothing this
// file returns contains it: errors name the URL without its query, and a
// response excerpt has the query's values blanked out.

// HTTPError is a non-2xx answer to a request on a grant URL.
type HTTPError struct {
	Method string
	URL    string // without the query string
	Status int
	// Excerpt is the start of the response body (an S3/Swift error code
	// and message), with anything from the query string removed.
	Excerpt string
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, http.StatusText(e.Status))
	if e.Excerpt != "" {
		msg += ": " + e.Excerpt
	}
	return msg
}

// redactURL returns raw without its query string, fragment and user info.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid grant URL)"
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment, u.User = "", false, "", "", nil
	return u.String()
}

// queryValues returns the values in raw's query string long enough to be
// worth blanking out of a response excerpt.
func queryValues(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	var out []string
	for _, vs := range u.Query() {
		for _, v := range vs {
			if len(v) >= 6 {
				out = append(out, v, url.QueryEscape(v))
			}
		}
	}
	return out
}

// newRequest builds the request a grant allows. The URL goes into errors
// only redacted.
func newRequest(ctx context.Context, g protocol.Grant, method string, body []byte) (*http.Request, error) {
	if !strings.EqualFold(g.Method, method) {
		return nil, fmt.Errorf("grant is for %q, want %s", g.Method, method)
	}
	var r io.Reader = http.NoBody
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, g.URL, r)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redactURL(g.URL), stripURL(err))
	}
	for k, vs := range g.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Host":
			if len(vs) > 0 {
				req.Host = vs[0]
			}
		case "Content-Length":
			// Set from the body below.
		default:
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
	}
	if body != nil {
		req.ContentLength = int64(len(body))
	}
	return req, nil
}

// stripURL removes the *url.Error wrapper that net/url and net/http put
// around errors: it quotes the whole URL, query string included.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// do sends req and checks the status. On success the caller owns the body.
func do(client *http.Client, req *http.Request, grantURL string) (*http.Response, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, redactURL(grantURL), stripURL(err))
	}
	if resp.StatusCode/100 != 2 {
		defer drainClose(resp.Body)
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, &HTTPError{
			Method:  req.Method,
			URL:     redactURL(grantURL),
			Status:  resp.StatusCode,
			Excerpt: excerpt(b, queryValues(grantURL)),
		}
	}
	return resp, nil
}

// put uploads data through g and returns the object's ETag, unquoted (S3
// quotes it, Swift does not).
func put(ctx context.Context, client *http.Client, g protocol.Grant, data []byte) (string, error) {
	req, err := newRequest(ctx, g, http.MethodPut, data)
	if err != nil {
		return "", err
	}
	resp, err := do(client, req, g.URL)
	if err != nil {
		return "", err
	}
	drainClose(resp.Body)
	return strings.Trim(resp.Header.Get("ETag"), `"`), nil
}

var (
	xmlCode    = regexp.MustCompile(`<Code>([^<]{0,100})</Code>`)
	xmlMessage = regexp.MustCompile(`<Message>([^<]{0,200})</Message>`)
	spaces     = regexp.MustCompile(`\s+`)
)

// excerpt makes a short, single-line summary of an error body. For S3's
// XML errors it keeps only Code and Message: the rest (StringToSign,
// SignatureProvided, CanonicalRequest) echoes the signed request.
func excerpt(body []byte, secrets []string) string {
	var s string
	if m := xmlCode.FindSubmatch(body); m != nil {
		s = string(m[1])
		if mm := xmlMessage.FindSubmatch(body); mm != nil {
			s += ": " + string(mm[1])
		}
	} else {
		s = strings.ToValidUTF8(string(body), "?")
		s = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, s)
	}
	s = strings.TrimSpace(spaces.ReplaceAllString(s, " "))
	for _, v := range secrets {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}

// drainClose reads a little of what is left of a body so that the
// connection can be reused, then closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}
