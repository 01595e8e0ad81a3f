package agentapi

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is raised by the agent_command insert trigger with the
// instance id as payload.
const notifyChannel = "coffer_agent_command"

// Hub fans NOTIFYs out to parked long-polls: one LISTEN connection per
// process, however many agents wait, so a parked request holds no Postgres
// connection.
type Hub struct {
	connConfig *pgx.ConnConfig
	logger     *slog.Logger

	mu      sync.Mutex
	waiters map[string]*waitSet
	ready   chan struct{}
}

type waitSet struct {
	chans map[chan struct{}]struct{}
}

// NewHub returns a hub that will LISTEN on a connection made from cfg.
func NewHub(cfg *pgx.ConnConfig, logger *slog.Logger) *Hub {
	return &Hub{connConfig: cfg, logger: logger, waiters: map[string]*waitSet{}, ready: make(chan struct{})}
}

// Ready is closed once the first LISTEN is in place.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Subscribe returns a channel that receives a value when a command for
// instanceID is inserted (or the hub reconnected and anything may have been
// missed). Call cancel when done.
func (h *Hub) Subscribe(instanceID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	set := h.waiters[instanceID]
	if set == nil {
		set = &waitSet{chans: map[chan struct{}]struct{}{}}
		h.waiters[instanceID] = set
	}
	set.chans[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(set.chans, ch)
		if len(set.chans) == 0 && h.waiters[instanceID] == set {
			delete(h.waiters, instanceID)
		}
		h.mu.Unlock()
	}
}

func (h *Hub) wake(instanceID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.waiters[instanceID]
	if set == nil {
		return
	}
	for ch := range set.chans {
		select {
		case ch <- struct{}{}:
		default: // already signalled
		}
	}
}

func (h *Hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.waiters {
		for ch := range set.chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// Run listens until ctx ends, reconnecting with backoff. After every
// (re)connect it wakes all waiters, since notifications sent while the
// connection was down are lost and the waiters must re-check the table.
func (h *Hub) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	first := true
	for {
		err := h.listen(ctx, func() {
			backoff = 100 * time.Millisecond
			if first {
				close(h.ready)
				first = false
			}
			h.wakeAll()
		})
		if ctx.Err() != nil {
			return nil
		}
		h.logger.Warn("agent command listener lost its connection; reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (h *Hub) listen(ctx context.Context, connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, h.connConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		h.wake(n.Payload)
	}
}
