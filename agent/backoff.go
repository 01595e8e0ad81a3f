package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with jitter. The jitter matters as much as
// the growth: when the control plane comes back after an outage, a fleet of
// agents must not reconnect in the same instant.
type backoff struct {
	min, max time.Duration
	attempt  int
}

// next returns how long to wait before the next attempt: half of the
// current step plus a random part of the other half, the step doubling
// from min up to max.
func (b *backoff) next() time.Duration {
	step := b.min
	for i := 0; i < b.attempt && step < b.max; i++ {
		step *= 2
	}
	step = min(step, b.max)
	b.attempt++
	half := step / 2
	if half <= 0 {
		return step
	}
	return half + rand.N(half+1)
}

// reset starts over from min after a success.
func (b *backoff) reset() { b.attempt = 0 }

func (a *Agent) newBackoff() *backoff {
	return &backoff{min: a.backoffMin, max: a.backoffMax}
}

// sleep waits for d, for ctx to end, or for a reload to replace the
// connection settings (they may fix whatever made the agent back off). It
// returns false when ctx ended.
func (a *Agent) sleep(ctx context.Context, d time.Duration) bool {
	changed := a.conn.Load().changed
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-changed:
		return true
	case <-t.C:
		return true
	}
}
