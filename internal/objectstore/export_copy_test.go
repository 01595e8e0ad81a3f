package objectstore

// CopyStoresFromEnvFunc is CopyStoresFromEnv with the environment as a
// function (tests run in parallel).
func CopyStoresFromEnvFunc(dataDir string, def Config, getenv func(string) string) ([]Config, error) {
	return copyStoresFromEnv(dataDir, def, getenv)
}
