package openstack

import (
	"context"
	"fmt"
	"sync"
)

// keyedMutex serialises the calls for one instance within the process, so
// that concurrent CreateServer calls never both find nothing and both
// create. A lock is a one-slot channel, so waiting gives up when the
// caller's context ends.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch    chan struct{}
	users int // holders and waiters; the entry goes when it drops to 0
}

// lock takes key's lock and returns its release.
func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()

	done := func() {
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, fmt.Errorf("wait for another call on instance %s: %w", key, context.Cause(ctx))
	}
}
