package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"slices"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/openapi"
)

func init() { register(Parameters) }

type parametersOutput struct {
	Body struct {
		Parameters []openapi.ConfigurationParameter `json:"configuration-parameters"`
	}
}

type parameterOutput struct {
	Body openapi.ConfigurationParameter // unwrapped, as Trove answers
}

type versionParametersInput struct {
	TenantPath
	Datastore string `path:"datastore" doc:"Datastore name or id" maxLength:"255"`
	Version   string `path:"version" doc:"Version name, number or id" maxLength:"255"`
}

type versionParameterInput struct {
	TenantPath
	Datastore string `path:"datastore" doc:"Datastore name or id" maxLength:"255"`
	Version   string `path:"version" doc:"Version name, number or id" maxLength:"255"`
	Name      string `path:"name" maxLength:"255"`
}

type versionByIDInput struct {
	TenantPath
	VersionID string `path:"version_id" doc:"Datastore version id" maxLength:"64"`
}

type versionByIDParameterInput struct {
	TenantPath
	VersionID string `path:"version_id" doc:"Datastore version id" maxLength:"64"`
	Name      string `path:"name" maxLength:"255"`
}

// Parameters serves the configuration parameters of datastore versions
// (the rules configuration values are validated against), and the
// version-by-id show whose path shares their routing problem (see
// aliasedAPI).
func Parameters(api huma.API, deps *Deps) {
	tags := []string{"Configuration parameters"}
	huma.Register(api, huma.Operation{
		OperationID: "list-datastore-version-parameters", Method: http.MethodGet,
		Path:    "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/parameters",
		Summary: "List the configuration parameters of a datastore version", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, func(ctx context.Context, in *versionParametersInput) (*parametersOutput, error) {
		v, err := deps.versionOf(ctx, in.Datastore, in.Version)
		if err != nil {
			return nil, err
		}
		return deps.listParameters(ctx, v)
	})
	huma.Register(api, huma.Operation{
		OperationID: "show-datastore-version-parameter", Method: http.MethodGet,
		Path:    "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/parameters/{name}",
		Summary: "Show a configuration parameter of a datastore version", Description: "The parameter is answered unwrapped, as Trove does.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, func(ctx context.Context, in *versionParameterInput) (*parameterOutput, error) {
		v, err := deps.versionOf(ctx, in.Datastore, in.Version)
		if err != nil {
			return nil, err
		}
		return deps.showParameter(ctx, v, in.Name)
	})

	// Paths under /datastores/versions/{version_id} overlap the patterns
	// /datastores/{datastore}/versions[/{version}...] in every segment
	// count, and neither is more specific, so http.ServeMux refuses them.
	// They are routed by an equally long all-wildcard pattern instead,
	// which the datastore patterns are more specific than; the spec still
	// shows Trove's path.
	byID := func(route string) huma.API {
		return aliasedAPI{API: api, route: route, literals: map[string]string{"datastores_x": "versions"}}
	}
	huma.Register(byID("/v1.0/{tenant_id}/datastores/{datastores_x}/{version_id}"), huma.Operation{
		OperationID: "show-datastore-version-by-id", Method: http.MethodGet,
		Path:    "/v1.0/{tenant_id}/datastores/versions/{version_id}",
		Summary: "Show a datastore version by id", Tags: []string{"Datastores"}, Security: tokenSecurity,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, func(ctx context.Context, in *versionByIDInput) (*datastoreVersionOutput, error) {
		v, err := deps.versionByID(ctx, in.VersionID)
		if err != nil {
			return nil, err
		}
		out := &datastoreVersionOutput{}
		out.Body.Version = versionView(ctx, in.TenantID, v, principal(ctx).IsAdmin())
		return out, nil
	})
	huma.Register(aliasedAPI{API: api, route: "/v1.0/{tenant_id}/datastores/{datastores_x}/{version_id}/{parameters_x}",
		literals: map[string]string{"datastores_x": "versions", "parameters_x": "parameters"}}, huma.Operation{
		OperationID: "list-parameters-by-version-id", Method: http.MethodGet,
		Path:    "/v1.0/{tenant_id}/datastores/versions/{version_id}/parameters",
		Summary: "List the configuration parameters of a datastore version by id", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, func(ctx context.Context, in *versionByIDInput) (*parametersOutput, error) {
		v, err := deps.versionByID(ctx, in.VersionID)
		if err != nil {
			return nil, err
		}
		return deps.listParameters(ctx, v)
	})
	huma.Register(aliasedAPI{API: api, route: "/v1.0/{tenant_id}/datastores/{datastores_x}/{version_id}/{parameters_x}/{name}",
		literals: map[string]string{"datastores_x": "versions", "parameters_x": "parameters"}}, huma.Operation{
		OperationID: "show-parameter-by-version-id", Method: http.MethodGet,
		Path:    "/v1.0/{tenant_id}/datastores/versions/{version_id}/parameters/{name}",
		Summary: "Show a configuration parameter of a datastore version by id", Description: "Unwrapped, as Trove answers.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, func(ctx context.Context, in *versionByIDParameterInput) (*parameterOutput, error) {
		v, err := deps.versionByID(ctx, in.VersionID)
		if err != nil {
			return nil, err
		}
		return deps.showParameter(ctx, v, in.Name)
	})
}

// versionOf resolves a datastore (404 when unknown) and one of its
// versions (Trove answers an unknown version with 400). Inactive versions
// are accepted here, as in Trove.
func (d *Deps) versionOf(ctx context.Context, dsRef, verRef string) (store.DatastoreVersion, error) {
	q := d.queries()
	ds, err := findDatastore(ctx, q, dsRef)
	if err != nil {
		return store.DatastoreVersion{}, d.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", dsRef))
	}
	v, err := findVersion(ctx, q, ds, verRef)
	if err != nil {
		return store.DatastoreVersion{}, d.lookupError(ctx, err, openapi.BadRequest("Datastore version '%s' cannot be found.", verRef))
	}
	return v, nil
}

// versionByID loads a datastore version by id (Trove: 400 when unknown).
func (d *Deps) versionByID(ctx context.Context, ref string) (store.DatastoreVersion, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return store.DatastoreVersion{}, openapi.BadRequest("Datastore version '%s' cannot be found.", ref)
	}
	v, err := d.queries().GetDatastoreVersion(ctx, id)
	if err != nil {
		return v, d.lookupError(ctx, err, openapi.BadRequest("Datastore version '%s' cannot be found.", ref))
	}
	return v, nil
}

func (d *Deps) listParameters(ctx context.Context, v store.DatastoreVersion) (*parametersOutput, error) {
	params, err := d.queries().ListConfigurationParameters(ctx, v.ID)
	if err != nil {
		return nil, d.internal(ctx, "list configuration parameters", err)
	}
	out := &parametersOutput{}
	out.Body.Parameters = make([]openapi.ConfigurationParameter, 0, len(params))
	for _, p := range params {
		out.Body.Parameters = append(out.Body.Parameters, parameterView(p))
	}
	return out, nil
}

func (d *Deps) showParameter(ctx context.Context, v store.DatastoreVersion, name string) (*parameterOutput, error) {
	p, err := d.queries().GetConfigurationParameter(ctx, store.GetConfigurationParameterParams{DatastoreVersionID: v.ID, Name: name})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, openapi.NotFound("Resource %s cannot be found.", name)
	}
	if err != nil {
		return nil, d.internal(ctx, "show configuration parameter", err)
	}
	return &parameterOutput{Body: parameterView(p)}, nil
}

// parameterView renders a rule; min and max are left out when unset or 0
// (Trove tests them for truth).
func parameterView(p store.ConfigurationParameter) openapi.ConfigurationParameter {
	v := openapi.ConfigurationParameter{Name: p.Name, DatastoreVersionID: p.DatastoreVersionID.String(),
		RestartRequired: p.RestartRequired, Type: p.DataType}
	for _, b := range []struct {
		n   pgtype.Numeric
		out **openapi.Number
	}{{p.MinSize, &v.Min}, {p.MaxSize, &v.Max}} {
		if r := numericRat(b.n); r != nil && r.Sign() != 0 {
			n := openapi.Number(ratString(r))
			*b.out = &n
		}
	}
	return v
}

// numericRat is a NUMERIC as an exact rational (nil for NULL or NaN).
func numericRat(n pgtype.Numeric) *big.Rat {
	if !n.Valid || n.NaN || n.InfinityModifier != pgtype.Finite || n.Int == nil {
		return nil
	}
	r := new(big.Rat).SetInt(n.Int)
	if n.Exp == 0 {
		return r
	}
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(n.Exp))), nil)
	if n.Exp > 0 {
		return r.Mul(r, new(big.Rat).SetInt(scale))
	}
	return r.Quo(r, new(big.Rat).SetInt(scale))
}

func abs(x int32) int32 {
	if x < 0 {
		return -x
	}
	return x
}

// ratString renders an integer without a fraction, anything else as a
// decimal.
func ratString(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	return r.FloatString(6)
}

// aliasedAPI registers operations on the mux under route, a pattern
// ServeMux accepts, while the spec documents their real path. literals
// names the route's wildcards that stand for fixed segments of the real
// path; a request with anything else there is Trove's plain 404.
type aliasedAPI struct {
	huma.API
	route    string
	literals map[string]string
}

func (a aliasedAPI) Adapter() huma.Adapter { return aliasedAdapter{Adapter: a.API.Adapter(), api: a} }

type aliasedAdapter struct {
	huma.Adapter
	api aliasedAPI
}

func (a aliasedAdapter) Handle(op *huma.Operation, handler func(huma.Context)) {
	routed := *op // op is the spec's: keep its path
	routed.Path = a.api.route
	a.Adapter.Handle(&routed, func(ctx huma.Context) {
		for name, want := range a.api.literals {
			if ctx.Param(name) != want {
				huma.WriteErr(a.api.API, ctx, http.StatusNotFound, "The resource could not be found.")
				return
			}
		}
		handler(ctx)
	})
}

// Configuration values against the rules ------------------------------------

// jsonKind classifies a raw JSON value as Python's json module would type
// it: "int", "float", "str", "bool", "list", "dict" or "null".
func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "null"
	}
	switch t[0] {
	case '"':
		return "str"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	case '[':
		return "list"
	case '{':
		return "dict"
	}
	if bytes.ContainsAny(t, ".eE") {
		return "float"
	}
	return "int"
}

// validateValues checks values against a version's rules as Trove does,
// with its messages (422): the version must have rules, every name
// (case-insensitive) must be a parameter, each value of the parameter's
// type (Python's: a boolean passes for an integer, an integer not for a
// float), numbers within min and max.
func validateValues(values openapi.ConfigValues, rules []store.ConfigurationParameter, datastore, version string) *openapi.Fault {
	unprocessable := func(format string, args ...any) *openapi.Fault {
		return openapi.Errorf(http.StatusUnprocessableEntity, format, args...)
	}
	if len(rules) == 0 {
		return unprocessable("Configuration groups are not supported for this datastore: %s %s", datastore, version)
	}
	byName := map[string]store.ConfigurationParameter{}
	for _, r := range rules {
		byName[strings.ToLower(r.Name)] = r
	}
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	slices.Sort(names) // report the same error for the same request
	seen := map[string]string{}
	for _, k := range names {
		key := strings.ToLower(k)
		rule, ok := byName[key]
		if !ok {
			return unprocessable("The configuration parameter %s is not supported for this datastore: %s %s.", k, datastore, version)
		}
		if other, dup := seen[key]; dup {
			return unprocessable("The configuration parameter %s is given twice (as %s and %s).", rule.Name, other, k)
		}
		seen[key] = k
		raw := values[k]
		kind := jsonKind(raw)
		typeOK := false
		switch rule.DataType {
		case "integer":
			typeOK = kind == "int" || kind == "bool"
		case "string":
			typeOK = kind == "str"
		case "boolean":
			typeOK = kind == "bool"
		case "float":
			typeOK = kind == "float"
		case "list":
			typeOK = kind == "list" && listOfScalars(raw)
		}
		if !typeOK {
			return unprocessable("The value provided for the configuration parameter %s is not of type %s.", k, rule.DataType)
		}
		// A configuration file holds one setting per line, and no control
		// characters (a tab or an escape is no part of any valid setting).
		if s, err := agentValue(raw, rule.DataType); err != nil || hasControl(s) {
			return unprocessable("The value provided for the configuration parameter %s must not contain line breaks, NUL or other control characters.", k)
		}
		if kind != "int" && kind != "float" {
			continue
		}
		v, ok := new(big.Rat).SetString(string(bytes.TrimSpace(raw)))
		if !ok {
			return unprocessable("The value provided for the configuration parameter %s is not of type %s.", k, rule.DataType)
		}
		// A bound the rule leaves open is still the datastore's number
		// type's: no datastore takes an integer beyond 64 bits.
		min, max := numericRat(rule.MinSize), numericRat(rule.MaxSize)
		if min == nil {
			min = numberBounds[rule.DataType][0]
		}
		if max == nil {
			max = numberBounds[rule.DataType][1]
		}
		if min != nil && v.Cmp(min) < 0 {
			return unprocessable("The value for the configuration parameter %s is less than the minimum allowed: %s", k, ratString(min))
		}
		if max != nil && v.Cmp(max) > 0 {
			return unprocessable("The value for the configuration parameter %s is greater than the maximum allowed: %s", k, ratString(max))
		}
	}
	return nil
}

// numberBounds are the widest values of a numeric parameter type, for the
// bounds its rule leaves open.
var numberBounds = map[string][2]*big.Rat{
	"integer": {new(big.Rat).SetInt64(math.MinInt64), new(big.Rat).SetInt64(math.MaxInt64)},
	"float":   {new(big.Rat).SetFloat64(-math.MaxFloat64), new(big.Rat).SetFloat64(math.MaxFloat64)},
}

func listOfScalars(raw json.RawMessage) bool {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return false
	}
	for _, it := range items {
		switch jsonKind(it) {
		case "list", "dict", "null":
			return false
		}
	}
	return true
}

// agentValues renders validated values as the strings the datastore's
// configuration takes: booleans on/off (1/0 for an integer parameter),
// numbers as written, lists comma-separated.
func agentValues(values openapi.ConfigValues, rules []store.ConfigurationParameter) (map[string]string, error) {
	types := map[string]string{}
	for _, r := range rules {
		types[strings.ToLower(r.Name)] = r.DataType
	}
	out := make(map[string]string, len(values))
	for k, raw := range values {
		s, err := agentValue(raw, types[strings.ToLower(k)])
		if err != nil {
			return nil, fmt.Errorf("configuration value %s: %w", k, err)
		}
		out[strings.ToLower(k)] = s
	}
	return out, nil
}

func agentValue(raw json.RawMessage, ruleType string) (string, error) {
	t := bytes.TrimSpace(raw)
	switch jsonKind(t) {
	case "str":
		var s string
		err := json.Unmarshal(t, &s)
		return s, err
	case "bool":
		on := string(t) == "true"
		switch {
		case ruleType == "integer" && on:
			return "1", nil
		case ruleType == "integer":
			return "0", nil
		case on:
			return "on", nil
		}
		return "off", nil
	case "int", "float":
		return string(t), nil
	case "list":
		var items []json.RawMessage
		if err := json.Unmarshal(t, &items); err != nil {
			return "", err
		}
		parts := make([]string, 0, len(items))
		for _, it := range items {
			s, err := agentValue(it, "")
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ", "), nil
	}
	return "", fmt.Errorf("unsupported value %s", t)
}

// restartNeeded reports whether going from the values before to after
// changes a parameter that takes effect only at a restart (set, changed or
// removed). Anything else is applied by a reload.
func restartNeeded(before, after openapi.ConfigValues, rules []store.ConfigurationParameter) bool {
	restart := map[string]bool{}
	for _, r := range rules {
		if r.RestartRequired {
			restart[strings.ToLower(r.Name)] = true
		}
	}
	canon := func(values openapi.ConfigValues) map[string]string {
		m := map[string]string{}
		for k, raw := range values {
			var compact bytes.Buffer
			if err := json.Compact(&compact, raw); err != nil {
				compact.Write(raw)
			}
			m[strings.ToLower(k)] = compact.String()
		}
		return m
	}
	b, a := canon(before), canon(after)
	for k := range restart {
		vb, inB := b[k]
		va, inA := a[k]
		if inB != inA || vb != va {
			return true
		}
	}
	return false
}
