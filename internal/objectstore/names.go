package objectstore

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Names are checked the same way on every backend, so that a key that
// works on one store works on the others and a key can never name
// something outside its container on the file store (no "..", no absolute
// paths, no backslashes, no NUL or other control characters).

// maxKeyLen is S3's limit (Swift allows 1024 bytes too).
const maxKeyLen = 1024

// checkContainer validates a container name.
func checkContainer(container string) error {
	switch {
	case container == "":
		return fmt.Errorf("container name is empty")
	case len(container) > 255:
		return fmt.Errorf("container name is longer than 255 bytes")
	case strings.HasPrefix(container, "."):
		// Also keeps the file store's own files (.grant-key, .tmp) out of
		// reach.
		return fmt.Errorf("container name %q starts with a dot", container)
	case strings.ContainsAny(container, "/\\"):
		return fmt.Errorf("container name %q contains a slash or backslash", container)
	}
	return checkChars("container name", container)
}

// checkKey validates an object key: slash-separated segments, none empty,
// "." or "..".
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("object key is empty")
	case len(key) > maxKeyLen:
		return fmt.Errorf("object key is longer than %d bytes", maxKeyLen)
	case strings.Contains(key, "\\"):
		return fmt.Errorf("object key %q contains a backslash", key)
	}
	if err := checkChars("object key", key); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("object key %q is absolute or has an empty segment", key)
		case ".", "..":
			return fmt.Errorf("object key %q has a %q segment", key, seg)
		}
	}
	return nil
}

// checkPrefix validates a listing prefix: empty, or a key that may end
// in a slash.
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return checkKey(strings.TrimSuffix(prefix, "/"))
}

func checkChars(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q contains a control character", what, s)
		}
	}
	return nil
}

// checkNames validates a container and a key.
func checkNames(container, key string) error {
	if err := checkContainer(container); err != nil {
		return err
	}
	return checkKey(key)
}
