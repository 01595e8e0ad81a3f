package openapi

// VolumeType is a block-storage volume type an instance may ask for on
// create (`volume.type`, by name or id), as the cloud's Cinder defines it.
type VolumeType struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	IsPublic    bool   `json:"is_public"`
	Description string `json:"description"`
}
