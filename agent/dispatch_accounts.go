package agent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// commandHandler adapts a typed command to a handler: it decodes the
// payload into a fresh P and calls fn.
func commandHandler[P any](fn func(ctx context.Context, p P) (any, error)) handler {
	return func(ctx context.Context, payload json.RawMessage) (json.RawMessage, error) {
		var p P
		if err := decodePayload(payload, &p); err != nil {
			return nil, err
		}
		out, err := fn(ctx, p)
		if err != nil || out == nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

// accounts returns the driver's Accounts, or an error naming the datastore
// that has none.
func (a *Agent) accounts() (driver.Accounts, error) {
	if acc, ok := a.drv.(driver.Accounts); ok {
		return acc, nil
	}
	return nil, fmt.Errorf("this datastore has no databases or users to manage")
}

func (a *Agent) configurable() (driver.Configurable, error) {
	if c, ok := a.drv.(driver.Configurable); ok {
		return c, nil
	}
	return nil, fmt.Errorf("this datastore does not support configuration, restart or resize")
}

// withAccounts wraps fn so it runs only on drivers with Accounts.
func withAccounts[P any](a *Agent, fn func(ctx context.Context, acc driver.Accounts, p P) (any, error)) handler {
	return commandHandler(func(ctx context.Context, p P) (any, error) {
		acc, err := a.accounts()
		if err != nil {
			return nil, err
		}
		return fn(ctx, acc, p)
	})
}

func withConfigurable[P any](a *Agent, fn func(ctx context.Context, c driver.Configurable, p P) (any, error)) handler {
	return commandHandler(func(ctx context.Context, p P) (any, error) {
		c, err := a.configurable()
		if err != nil {
			return nil, err
		}
		return fn(ctx, c, p)
	})
}

// extendedHandlers are the commands beyond prepare.
func (a *Agent) extendedHandlers() map[string]handler {
	type none struct{}
	return map[string]handler{
		protocol.CommandCreateDatabases: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.CreateDatabasesRequest) (any, error) {
			return nil, acc.CreateDatabases(ctx, p.Databases)
		}),
		protocol.CommandDeleteDatabase: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.DeleteDatabaseRequest) (any, error) {
			return nil, acc.DeleteDatabase(ctx, p.Name)
		}),
		protocol.CommandCreateUsers: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.CreateUsersRequest) (any, error) {
			return nil, acc.CreateUsers(ctx, p.Users)
		}),
		protocol.CommandDeleteUser: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.UserRef) (any, error) {
			return nil, acc.DeleteUser(ctx, p)
		}),
		protocol.CommandUpdateUser: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.UpdateUserRequest) (any, error) {
			return nil, acc.UpdateUser(ctx, p)
		}),
		protocol.CommandGrantAccess: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.GrantAccessRequest) (any, error) {
			return nil, acc.GrantAccess(ctx, p.UserRef, p.Databases)
		}),
		protocol.CommandRevokeAccess: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.RevokeAccessRequest) (any, error) {
			return nil, acc.RevokeAccess(ctx, p.UserRef, p.Database)
		}),
		protocol.CommandEnableRoot: withAccounts(a, func(ctx context.Context, acc driver.Accounts, p protocol.EnableRootRequest) (any, error) {
			name, err := acc.EnableRoot(ctx, p.Password)
			if err != nil {
				return nil, err
			}
			return protocol.EnableRootResult{Name: name}, nil
		}),
		protocol.CommandDisableRoot: withAccounts(a, func(ctx context.Context, acc driver.Accounts, _ none) (any, error) {
			return nil, acc.DisableRoot(ctx)
		}),
		protocol.CommandApplyConfiguration: withConfigurable(a, func(ctx context.Context, c driver.Configurable, p protocol.ApplyConfigurationRequest) (any, error) {
			return nil, c.ApplyConfiguration(ctx, p.Values, p.Restart)
		}),
		protocol.CommandRestart: withConfigurable(a, func(ctx context.Context, c driver.Configurable, _ none) (any, error) {
			return nil, c.Restart(ctx)
		}),
		protocol.CommandResizeFlavor: withConfigurable(a, func(ctx context.Context, c driver.Configurable, p protocol.ResizeFlavorRequest) (any, error) {
			return nil, c.ResizeMemory(ctx, p.FlavorRAMMB)
		}),
		protocol.CommandResizeVolume: withConfigurable(a, func(ctx context.Context, c driver.Configurable, p protocol.ResizeVolumeRequest) (any, error) {
			return nil, c.ResizeVolume(ctx, p.VolumeSizeGB)
		}),
	}
}
