package protocol

// Commands of the management instance actions (Trove's mgmt stop and
// rebuild; mgmt reboot is CommandRestart) and of guest logs.
const (
	// CommandStopDatastore shuts the datastore down; it stays down until
	// a restart (or an agent restart after a rebuild). No payload.
	CommandStopDatastore = "stop_datastore"
	// CommandRebuild runs on the agent the provider started again on the
	// instance's volume (RebuildRequest): it brings the datastore up from
	// that volume and answers once it serves.
	CommandRebuild = "rebuild"
	// CommandGuestLogAction enables or disables a guest log
	// (GuestLogActionRequest); Output: GuestLog.
	CommandGuestLogAction = "guest_log_action"
	// CommandGuestLogRead returns a piece of a guest log's file
	// (GuestLogReadRequest); Output: GuestLogChunk. The control plane
	// publishes a log by reading it piece by piece: the guest never holds
	// the object store's credentials.
	CommandGuestLogRead = "guest_log_read"
)

// GuestLogReadMax bounds GuestLogReadRequest.Max: a chunk travels base64
// encoded in a command result, which the agent API takes up to 1 MiB.
const GuestLogReadMax = 512 << 10

// GuestLogReadRequest asks for the complete lines of a log's file from
// Offset, at most Max bytes (a single line longer than Max comes in
// pieces).
type GuestLogReadRequest struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset"`
	Max    int    `json:"max"`
}

// GuestLogChunk is a piece of a log's file: Data starts at Offset. Size
// is the file's size when it was read; a Size below the Offset asked for
// means the file was truncated or replaced since (Data is then empty).
type GuestLogChunk struct {
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"`
	Size   int64  `json:"size"`
}

// RebuildRequest records which image the server was rebuilt from.
type RebuildRequest struct {
	ImageID string `json:"image_id"`
}

// Guest log types (Trove's LogType): a USER log can be enabled and
// disabled; a SYS log is always written and can only be published.
const (
	GuestLogUser = "USER"
	GuestLogSys  = "SYS"
)

// GuestLogActionRequest changes one guest log. At most one of Enable and
// Disable is set; Discard forgets what was published.
type GuestLogActionRequest struct {
	Name    string `json:"name"`
	Enable  bool   `json:"enable,omitempty"`
	Disable bool   `json:"disable,omitempty"`
	Discard bool   `json:"discard,omitempty"`
}

// GuestLog is a guest log as the agent sees it, reported with the
// inventory: the control plane derives Trove's log status from it.
type GuestLog struct {
	Name    string `json:"name"`
	Type    string `json:"type"` // GuestLogUser or GuestLogSys
	Enabled bool   `json:"enabled"`
	// File is the log's file on the volume (relative to the data dir).
	File string `json:"file"`
	// Size is the file's size in bytes (0: no file yet).
	Size int64 `json:"size"`
	// Published is how many bytes of the file were published.
	Published int64 `json:"published"`
}
