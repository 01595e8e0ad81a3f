package protocol

// Modules (Trove's module_apply / module_remove): the control plane sends
// a module's contents; the agent stores them under <volume>/modules/<name>
// (0600) and runs the module type's driver.
const (
	CommandModuleApply  = "module_apply"  // ModuleApplyRequest; Output: ModuleApplyResult
	CommandModuleRemove = "module_remove" // ModuleRemoveRequest
)

// Module types the agent has drivers for.
const (
	ModuleTypePing            = "ping"
	ModuleTypeNewRelicLicense = "new_relic_license"
)

// Module is one module to apply. Contents are the plain bytes (base64 in
// JSON); the command's payload is cleared when it completes.
type Module struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	MD5      string `json:"md5"`
	Contents []byte `json:"contents"`
}

// ModuleApplyRequest applies modules, in order.
type ModuleApplyRequest struct {
	Modules []Module `json:"modules"`
}

// ModuleResult is the guest's record of one applied module.
type ModuleResult struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	MD5     string `json:"md5"`
	Status  string `json:"status"` // "OK" or "ERROR"
	Message string `json:"message"`
}

// ModuleApplyResult reports every module of a ModuleApplyRequest.
type ModuleApplyResult struct {
	Modules []ModuleResult `json:"modules"`
}

// ModuleRemoveRequest undoes a module's driver and deletes its contents.
type ModuleRemoveRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}
