package seed

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"regexp"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/db/store"
)

// validationRules are Trove's configuration-parameter rules
// (trove/templates/<manager>/validation-rules.json, public Trove data), one
// file per datastore manager. Only managers with a file here support
// configuration groups.
//
//go:embed validation-rules/*.json
var validationRules embed.FS

// Rule is one configuration parameter's validation rule.
type Rule struct {
	Name            string
	Type            string // integer, string, boolean, float or list
	RestartRequired bool
	// Min and Max are decimal numbers ("" when absent). Kept as text: some
	// rules (MySQL's 18446744073709551615) do not fit an int64.
	Min, Max string
}

// excludedParameters are rules Trove's files list that Coffer does not
// offer. archive_command runs a shell command as the database's OS user;
// with the local provider that user and host are the control plane's.
var excludedParameters = map[string]map[string]bool{
	"postgresql": {"archive_command": true},
}

var ruleTypes = map[string]bool{"integer": true, "string": true, "boolean": true, "float": true, "list": true}

var parameterName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)

// ParseRules reads a validation-rules file: {"configuration-parameters":
// [{"name", "restart_required", "type", "min"?, "max"?}, ...]}. Numbers
// are kept exactly as written.
func ParseRules(data []byte) ([]Rule, error) {
	var file struct {
		Parameters []struct {
			Name            string       `json:"name"`
			RestartRequired bool         `json:"restart_required"`
			Type            string       `json:"type"`
			Min             *json.Number `json:"min"`
			Max             *json.Number `json:"max"`
		} `json:"configuration-parameters"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("parse validation rules: %w", err)
	}
	seen := map[string]bool{}
	rules := make([]Rule, 0, len(file.Parameters))
	for _, p := range file.Parameters {
		if !parameterName.MatchString(p.Name) {
			return nil, fmt.Errorf("validation rule %q: invalid parameter name", p.Name)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("validation rule %s: listed twice", p.Name)
		}
		seen[p.Name] = true
		if !ruleTypes[p.Type] {
			return nil, fmt.Errorf("validation rule %s: unknown type %q", p.Name, p.Type)
		}
		r := Rule{Name: p.Name, Type: p.Type, RestartRequired: p.RestartRequired}
		for _, b := range []struct {
			n   *json.Number
			out *string
		}{{p.Min, &r.Min}, {p.Max, &r.Max}} {
			if b.n == nil {
				continue
			}
			if _, ok := new(big.Rat).SetString(b.n.String()); !ok {
				return nil, fmt.Errorf("validation rule %s: bound %q is not a number", p.Name, b.n)
			}
			*b.out = b.n.String()
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// RulesFor returns the embedded rules of a datastore manager, without the
// excluded ones; ok is false when the manager has none.
func RulesFor(manager string) (rules []Rule, ok bool, err error) {
	data, err := validationRules.ReadFile("validation-rules/" + manager + ".json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	all, err := ParseRules(data)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", manager, err)
	}
	for _, r := range all {
		if !excludedParameters[manager][r.Name] {
			rules = append(rules, r)
		}
	}
	return rules, true, nil
}

// LoadParameters stores rules as the configuration parameters of a
// datastore version, as `trove-manage db_load_datastore_config_parameters`
// does: each rule is created or updated; parameters not in rules stay.
func LoadParameters(ctx context.Context, q *store.Queries, versionID uuid.UUID, rules []Rule) error {
	for _, r := range rules {
		p := store.UpsertConfigurationParameterParams{
			DatastoreVersionID: versionID, Name: r.Name, DataType: r.Type, RestartRequired: r.RestartRequired,
		}
		if err := scanNumeric(&p.MinSize, r.Min); err != nil {
			return fmt.Errorf("parameter %s min: %w", r.Name, err)
		}
		if err := scanNumeric(&p.MaxSize, r.Max); err != nil {
			return fmt.Errorf("parameter %s max: %w", r.Name, err)
		}
		if err := q.UpsertConfigurationParameter(ctx, p); err != nil {
			return fmt.Errorf("store parameter %s: %w", r.Name, err)
		}
	}
	return nil
}

func scanNumeric(n *pgtype.Numeric, s string) error {
	if s == "" {
		*n = pgtype.Numeric{}
		return nil
	}
	return n.Scan(s)
}

// loadAllParameters loads the embedded rules into every datastore version
// whose manager has them (seeded versions and those an admin created).
func loadAllParameters(ctx context.Context, q *store.Queries) error {
	versions, err := q.ListAllDatastoreVersions(ctx)
	if err != nil {
		return fmt.Errorf("seed configuration parameters: %w", err)
	}
	for _, v := range versions {
		rules, ok, err := RulesFor(v.Manager)
		if err != nil {
			return fmt.Errorf("seed configuration parameters: %w", err)
		}
		if !ok {
			continue
		}
		if err := LoadParameters(ctx, q, v.ID, rules); err != nil {
			return fmt.Errorf("seed configuration parameters of version %s: %w", v.ID, err)
		}
	}
	return nil
}
