package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// NewDriverFunc builds the driver for the datastore cfg.Datastore names.
// Main takes it as a parameter so that this package does not depend on the
// drivers (package agentcmd supplies the real table).
type NewDriverFunc func(cfg protocol.AgentConfig) (driver.Driver, error)

// Main is the agent's command line: it parses args (the arguments after
// the program or subcommand name), runs the agent until SIGINT or SIGTERM,
// re-reads the configuration file on SIGHUP, and returns the exit code.
// Logs go to stderr as JSON.
//
//	-config PATH   configuration file (default $COFFER_AGENT_CONFIG, else /etc/coffer/agent.json)
//	-log-level L   debug, info, warn or error (default info)
//	-version       print the version and exit
//
// Stopping the agent leaves the datastore running.
func Main(args []string, newDriver NewDriverFunc) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, let a second one kill the process the
		// default way, in case shutting down hangs.
		<-ctx.Done()
		stop()
	}()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	return run(ctx, args, os.Stdout, os.Stderr, hup, newDriver)
}

// run is Main without the process-wide parts (signals, standard streams),
// for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan os.Signal, newDriver NewDriverFunc) int {
	fs := flag.NewFlagSet("coffer-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaultPath := os.Getenv(EnvConfig)
	if defaultPath == "" {
		defaultPath = DefaultConfigPath
	}
	configPath := fs.String("config", defaultPath, "agent configuration file (JSON); env "+EnvConfig)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "coffer-agent: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "coffer-agent", agentVersion())
		return 0
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "coffer-agent: -log-level: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := LoadConfig(*configPath)
	if err != nil {
		logger.Error("load configuration", "error", err)
		return 1
	}
	drv, err := newDriver(cfg)
	if err != nil {
		logger.Error("create datastore driver", "datastore", cfg.Datastore, "error", err)
		return 1
	}
	source := func() (protocol.AgentConfig, error) { return LoadConfig(*configPath) }
	a, err := New(cfg, drv, logger, WithConfigSource(source))
	if err != nil {
		logger.Error("create agent", "error", err)
		return 1
	}

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-reload:
				logger.Info("SIGHUP: reloading configuration", "path", *configPath)
				cfg, err := LoadConfig(*configPath)
				if err == nil {
					err = a.Reload(cfg)
				}
				if err != nil {
					logger.Error("reload configuration; keeping the current one", "error", err)
				}
			}
		}
	}()

	if err := a.Run(ctx); err != nil {
		logger.Error("agent failed", "error", err)
		return 1
	}
	return 0
}
