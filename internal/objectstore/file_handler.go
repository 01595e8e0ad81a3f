package objectstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ObjectsPath is where the file store's grant URLs live on the agent API:
// mount (*File).Handler() there, without stripping the prefix and without
// bearer authentication (the signature is the authentication).
const ObjectsPath = "/agent/v1/objects/"

// fileSignature is the hex HMAC-SHA256 over the request a grant allows.
// Size is part of PUT signatures only (GET passes -1): a PUT grant is for
// exactly one size. The fields cannot contain newlines (checkNames).
func fileSignature(key []byte, method, container, objKey string, expires, size int64) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s\n%s\n%s\n%d\n", method, container, objKey, expires)
	if size >= 0 {
		fmt.Fprintf(m, "%d", size)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Handler serves the file store's grant URLs: GET streams an object, PUT
// stores one atomically; both need a valid, unexpired signature for exactly
// that method, container and key (and, for PUT, a Content-Length equal to
// the granted size). Other methods get 405, bad or expired signatures 403,
// malformed paths 400.
func (f *File) Handler() http.Handler {
	return http.HandlerFunc(f.serve)
}

func (f *File) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPut {
		w.Header().Set("Allow", "GET, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, ObjectsPath)
	if !ok {
		http.NotFound(w, r)
		return
	}
	container, key, ok := strings.Cut(rest, "/")
	if !ok {
		http.Error(w, "path must be "+ObjectsPath+"<container>/<key>", http.StatusBadRequest)
		return
	}
	if err := checkNames(container, key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	expires, err := strconv.ParseInt(q.Get("expires"), 10, 64)
	if err != nil {
		http.Error(w, "missing or malformed expires", http.StatusForbidden)
		return
	}
	sig, err := hex.DecodeString(q.Get("sig"))
	if err != nil || len(sig) != sha256.Size {
		http.Error(w, "missing or malformed sig", http.StatusForbidden)
		return
	}
	if time.Now().Unix() > expires {
		http.Error(w, "grant expired", http.StatusForbidden)
		return
	}
	size := int64(-1)
	if r.Method == http.MethodPut {
		if r.ContentLength < 0 {
			http.Error(w, "Content-Length required", http.StatusLengthRequired)
			return
		}
		size = r.ContentLength
	}
	sk, err := f.signingKey()
	if err != nil {
		slog.ErrorContext(r.Context(), "file store: grant key", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	want, _ := hex.DecodeString(fileSignature(sk, r.Method, container, key, expires, size))
	if !hmac.Equal(sig, want) {
		msg := "signature does not match"
		if r.Method == http.MethodPut {
			msg += " (another object, or a Content-Length other than the granted size)"
		}
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	if r.Method == http.MethodGet {
		f.serveGet(w, r, container, key)
		return
	}
	if err := f.put(r.Context(), container, key, r.Body, size); err != nil {
		if errors.Is(err, ErrNotFound) {
			http.Error(w, "container not found", http.StatusNotFound)
			return
		}
		if errors.Is(err, errSize) || r.Context().Err() != nil {
			http.Error(w, "body does not match Content-Length", http.StatusBadRequest)
			return
		}
		slog.ErrorContext(r.Context(), "file store: put through grant", "container", container, "key", key, "err", err)
		http.Error(w, "storing the object failed", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (f *File) serveGet(w http.ResponseWriter, r *http.Request, container, key string) {
	file, st, err := f.open(container, key)
	if errors.Is(err, ErrNotFound) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		slog.ErrorContext(r.Context(), "file store: get through grant", "container", container, "key", key, "err", err)
		http.Error(w, "reading the object failed", http.StatusInternalServerError)
		return
	}
	defer file.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	// ServeContent sets Content-Length and answers Range requests.
	http.ServeContent(w, r, "", st.ModTime(), file)
}
