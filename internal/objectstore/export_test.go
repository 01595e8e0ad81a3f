package objectstore

// Hooks for the external tests (package objectstore_test, which cannot be
// an internal test: objectstoretest imports this package).

// FromEnvFunc is FromEnv with the environment as a function, so that
// tests can run in parallel (t.Setenv cannot).
func FromEnvFunc(dataDir string, getenv func(string) string) (Config, error) {
	return fromEnv(dataDir, getenv)
}

// SetMaxManifestSegments lowers Swift's per-manifest segment limit, to
// test manifests of manifests with a few segments.
func SetMaxManifestSegments(s *Swift, n int) { s.maxManifestSegments = n }

// BreakToken replaces the Swift client's token with an invalid one, as if
// it had expired.
func BreakToken(s *Swift) {
	s.client.SetTokenAndAuthResult(swauthToken("AUTH_tk00000000000000000000000000000000"))
}

// Token is the Swift client's current token.
func Token(s *Swift) string { return s.client.Token() }
