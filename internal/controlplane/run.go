package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"golang.org/x/sync/errgroup"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/functions"
	"github.com/coffer-dbaas/coffer/functions/agentapi"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/provider/local"
	"github.com/coffer-dbaas/coffer/internal/provider/openstack"
	"github.com/coffer-dbaas/coffer/internal/ratelimit"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/tlsca"
	"github.com/coffer-dbaas/coffer/jobs"
)

// Roles selects what a process runs.
type Roles struct {
	API    bool // public API and agent API
	Worker bool // River workers (lifecycle jobs)
	// Seed creates the catalog and the demo project (all-in-one only).
	Seed bool
}

// Run runs the given roles until ctx ends. ready, if not nil, is called
// with what a user needs once everything serves.
func Run(ctx context.Context, cfg Config, roles Roles, logger *slog.Logger, ready func(Ready)) error {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	database, err := OpenDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := database.Close(stopCtx); err != nil {
			logger.Error("stop embedded postgres", "err", err)
		}
	}()
	pool := database.Pool

	var creds seed.Credentials
	if roles.Seed {
		if err := seed.Catalog(ctx, pool); err != nil {
			return err
		}
		if creds, err = seed.DemoProject(ctx, pool, cfg.DataDir, cfg.DemoProject); err != nil {
			return err
		}
	}

	ca, err := tlsca.LoadOrCreate(filepath.Join(cfg.DataDir, "tls"), cfg.tlsHosts())
	if err != nil {
		return fmt.Errorf("agent channel certificates: %w", err)
	}

	var apiLn, agentLn net.Listener
	if roles.API {
		if apiLn, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		defer apiLn.Close()
		if agentLn, err = net.Listen("tcp", cfg.AgentListen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.AgentListen, err)
		}
		defer agentLn.Close()
		if cfg.AgentAPIURL == "" {
			cfg.AgentAPIURL = "https://" + agentLn.Addr().String()
		}
	}
	if cfg.AgentAPIURL == "" {
		return errors.New("COFFER_AGENT_API_URL must be set for a worker without the API role")
	}

	backupLocations, keys, err := openBackups(ctx, cfg.DataDir, cfg.AgentAPIURL, logger)
	if err != nil {
		return err
	}
	backupStore := backupLocations.Default.Store

	riverCfg := &river.Config{Logger: logger}
	// The API checks images with the provider of a cloud (OpenStack), so
	// an API-only process has one too; the local provider it needs not.
	var prov provider.Provider
	if roles.Worker || (roles.API && cfg.Provider == "openstack") {
		if prov, err = newProvider(ctx, cfg, logger); err != nil {
			return err
		}
	}
	images, _ := prov.(provider.ImageChecker)
	if roles.Worker {
		syncCatalogAtStart(ctx, pool, prov, logger)
		riverCfg = jobs.Config(&jobs.Deps{
			Pool: pool, Provider: prov, AgentAPIURL: cfg.AgentAPIURL, AgentCACert: string(ca.CACertPEM),
			BuildTimeout: cfg.BuildTimeout, Logger: logger, Store: backupStore, Keys: keys,
			Locations: backupLocations,
		}, cfg.MaxWorkers)
	}
	riverClient, err := river.NewClient(riverpgxv5.New(pool), riverCfg)
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	if roles.Worker {
		if err := riverClient.Start(ctx); err != nil {
			return fmt.Errorf("start workers: %w", err)
		}
		g.Go(func() error {
			<-ctx.Done()
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			return riverClient.Stop(stopCtx)
		})
	}

	if roles.API {
		hub := agentapi.NewHub(pool.Config().ConnConfig, logger)
		g.Go(func() error { return hub.Run(ctx) })

		authn, err := cfg.authenticator(pool, logger)
		if err != nil {
			return err
		}
		limiter, err := ratelimit.New(pool, cfg.RateLimits, logger)
		if err != nil {
			return fmt.Errorf("rate limits: %w", err)
		}
		public := &http.Server{Handler: functions.Handler(&functions.Deps{
			Pool: pool, River: riverClient, Auth: authn, RateLimit: limiter,
			Region: cfg.Region, DefaultDatastore: cfg.DefaultDatastore, MaxVolumeGB: cfg.MaxVolumeGB, Images: images, Logger: logger,
			Keys: keys, Store: backupStore, Locations: backupLocations,
		}), ReadHeaderTimeout: 10 * time.Second}
		agentSrv := &http.Server{Handler: (&agentapi.Server{Pool: pool, River: riverClient, Hub: hub, Logger: logger, Store: backupStore,
			Locations: backupLocations}).Handler(),
			TLSConfig: ca.ServerTLSConfig(), ReadHeaderTimeout: 10 * time.Second}

		serve := func(srv *http.Server, ln net.Listener, tls bool) {
			g.Go(func() error {
				var err error
				if tls {
					err = srv.ServeTLS(ln, "", "")
				} else {
					err = srv.Serve(ln)
				}
				if errors.Is(err, http.ErrServerClosed) {
					return nil
				}
				return err
			})
			g.Go(func() error {
				<-ctx.Done()
				stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				// Parked long-polls end with the process; agents reconnect.
				_ = srv.Shutdown(stopCtx)
				return srv.Close()
			})
		}
		serve(public, apiLn, false)
		serve(agentSrv, agentLn, true)
		select {
		case <-hub.Ready():
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			logger.Warn("agent command listener not connected yet; long-polls fall back to their timeout")
		}
	}

	if ready != nil && ctx.Err() == nil {
		r := Ready{Credentials: creds, DataDir: cfg.DataDir}
		if apiLn != nil {
			r.Endpoint = "http://" + apiLn.Addr().String()
			r.AgentEndpoint = "https://" + agentLn.Addr().String()
		}
		if roles.Seed && apiLn != nil {
			r.MemberRC = filepath.Join(cfg.DataDir, "openrc")
			r.AdminRC = filepath.Join(cfg.DataDir, "openrc-admin")
			if err := seed.WriteOpenRC(r.MemberRC, r.Endpoint, creds.ProjectID, creds.MemberToken); err != nil {
				return err
			}
			if err := seed.WriteOpenRC(r.AdminRC, r.Endpoint, creds.ProjectID, creds.AdminToken); err != nil {
				return err
			}
		}
		ready(r)
	}
	return g.Wait()
}

// Ready is what a started process tells its user.
type Ready struct {
	Endpoint      string
	AgentEndpoint string
	DataDir       string
	Credentials   seed.Credentials
	MemberRC      string
	AdminRC       string
}

// authenticator is the token validation COFFER_AUTH selects.
func (c Config) authenticator(pool *pgxpool.Pool, logger *slog.Logger) (auth.Authenticator, error) {
	if c.Auth != "keystone" {
		return &auth.Builtin{Queries: store.New(pool)}, nil
	}
	kc := c.Keystone
	kc.Logger = logger
	k, err := auth.NewKeystone(kc)
	if err != nil {
		return nil, err
	}
	logger.Info("validating tokens with Keystone", "url", kc.AuthURL, "service_user", kc.Username, "cache_ttl", kc.CacheTTL)
	return k, nil
}

func (c Config) tlsHosts() []string {
	hosts := append([]string{}, c.TLSHosts...)
	if h, _, err := net.SplitHostPort(c.AgentListen); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

// newProvider builds the configured compute provider.
func newProvider(ctx context.Context, cfg Config, logger *slog.Logger) (provider.Provider, error) {
	if cfg.Provider == "openstack" {
		osCfg, err := openstack.ConfigFromEnv()
		if err != nil {
			return nil, fmt.Errorf("openstack provider: %w", err)
		}
		p, err := openstack.New(ctx, osCfg, logger)
		if err != nil {
			return nil, fmt.Errorf("openstack provider: %w", err)
		}
		return p, nil
	}
	p, err := local.New(local.Config{Root: cfg.LocalRoot, AgentCommand: cfg.AgentCommand, AddressPrefix: cfg.LocalAddresses, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("local provider: %w", err)
	}
	return p, nil
}
