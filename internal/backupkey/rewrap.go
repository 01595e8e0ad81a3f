package backupkey

import (
	"fmt"

	"github.com/google/uuid"
)

// Rewrap returns backup from's data key wrapped for backup to (a copy of
// from in another location: the same data key, as the copied ciphertext was
// encrypted with it, bound to the copy's id as every wrapped key is to its
// backup's). The plain key never leaves this function.
func (k *Keyring) Rewrap(pk *ProjectKey, from uuid.UUID, wrapped []byte, to uuid.UUID) ([]byte, error) {
	plain, err := k.Unwrap(pk, from, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	out, err := wrap(pk.aead, plain, []byte(to.String()))
	if err != nil {
		return nil, fmt.Errorf("data key of backup %s for copy %s: %w", from, to, err)
	}
	return out, nil
}
