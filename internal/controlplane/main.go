package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main runs roles with the configuration from the environment until
// SIGINT/SIGTERM, and returns the exit code.
func Main(roles Roles) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer:", err)
		return 1
	}
	cfg, err := FromEnv(self)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer: configuration:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = Run(ctx, cfg, roles, logger, func(r Ready) {
		if r.Endpoint == "" {
			logger.Info("worker running")
			return
		}
		fmt.Printf("Coffer is running.\n  API:        %s/v1.0/%s\n  agent API:  %s\n  data:       %s\n",
			r.Endpoint, r.Credentials.ProjectID, r.AgentEndpoint, r.DataDir)
		if r.MemberRC != "" {
			fmt.Printf("  project:    %s (%s)\n  admin token:  %s\n  member token: %s\n"+
				"  For the openstack CLI:  source %s   (admin: source %s)\n"+
				"  API docs:   %s/docs\n",
				r.Credentials.ProjectName, r.Credentials.ProjectID, r.Credentials.AdminToken, r.Credentials.MemberToken,
				r.MemberRC, r.AdminRC, r.Endpoint)
		}
	})
	if err != nil {
		logger.Error("coffer stopped", "err", err)
		return 1
	}
	return 0
}
