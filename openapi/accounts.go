package openapi

// Databases, users, user access and root of an instance (Trove's instance
// extensions, API §6). Names follow the PostgreSQL driver's rule: 1 to 63
// letters, digits, '_', '.' or '-', starting with a letter or '_'.

// DatabaseName names a database (list items, access lists, grants).
type DatabaseName struct {
	Name string `json:"name" minLength:"1" maxLength:"63" example:"orders"`
}

// DatabaseCreateSpec is a database to create.
type DatabaseCreateSpec struct {
	Name         string `json:"name" minLength:"1" maxLength:"63" pattern:"^[A-Za-z_][A-Za-z0-9_.-]*$" patternDescription:"letters, digits, _ . - (starting with a letter or _)" example:"orders"`
	CharacterSet string `json:"character_set,omitempty" maxLength:"32" doc:"Encoding, e.g. UTF8 (PostgreSQL's names)" example:"UTF8"`
	Collate      string `json:"collate,omitempty" maxLength:"64" doc:"Locale for collation and character classes, e.g. C.UTF-8" example:"C.UTF-8"`
}

// DatabasesCreate is the body of POST .../databases.
type DatabasesCreate struct {
	Databases []DatabaseCreateSpec `json:"databases" minItems:"1" maxItems:"100"`
}

// DatabaseAccess is the body of PUT .../users/{user}/databases (grant).
type DatabaseAccess struct {
	Databases []DatabaseName `json:"databases" minItems:"1" maxItems:"100"`
}

// DBUser is a database user as listed and shown: PostgreSQL users have no
// host restriction, so host is always "%".
type DBUser struct {
	Name      string         `json:"name" example:"app"`
	Host      string         `json:"host" example:"%"`
	Databases []DatabaseName `json:"databases"`
}

// DBUserCreate is a user to create, with access to its databases.
type DBUserCreate struct {
	Name      string         `json:"name" minLength:"1" maxLength:"63" pattern:"^[A-Za-z_][A-Za-z0-9_.-]*$" patternDescription:"letters, digits, _ . - (starting with a letter or _)" example:"app"`
	Password  string         `json:"password" minLength:"1" maxLength:"255"`
	Host      string         `json:"host,omitempty" maxLength:"255" doc:"Only % (any host) for PostgreSQL"`
	Databases []DatabaseName `json:"databases,omitempty" maxItems:"100"`
}

// UsersCreate is the body of POST .../users.
type UsersCreate struct {
	Users []DBUserCreate `json:"users" minItems:"1" maxItems:"100"`
}

// DBUserUpdate is the body's "user" of PUT .../users/{user}: at least one
// of a new name, password or host.
type DBUserUpdate struct {
	Name     *string `json:"name,omitempty" maxLength:"63" doc:"New name"`
	Password *string `json:"password,omitempty" maxLength:"255" doc:"New password"`
	Host     *string `json:"host,omitempty" maxLength:"255" doc:"New host; only % for PostgreSQL"`
}

// DBUserPassword is one entry of PUT .../users (change passwords).
type DBUserPassword struct {
	Name     string `json:"name" minLength:"1" maxLength:"63"`
	Password string `json:"password" minLength:"1" maxLength:"255"`
	Host     string `json:"host,omitempty" maxLength:"255"`
}

// UsersPasswords is the body of PUT .../users.
type UsersPasswords struct {
	Users []DBUserPassword `json:"users" minItems:"1" maxItems:"100"`
}

// RootEnable is the optional body of POST .../root.
type RootEnable struct {
	Password *string `json:"password,omitempty" maxLength:"255" doc:"The superuser's password; generated when absent or empty"`
}

// RootCredentials is the superuser that root enable set up.
type RootCredentials struct {
	Name     string `json:"name" example:"postgres"`
	Password string `json:"password" example:"q5BXXMUMbc8XBf5kkVToKZW4Kx3Egv5VjY0P"`
}

// RootHistory is the management view of an instance's root enablement:
// when root was last enabled and by whom ("Never" / "Nobody" otherwise).
type RootHistory struct {
	ID      string `json:"id" doc:"Instance id"`
	Enabled string `json:"enabled" doc:"UTC time of the enable, or Never" example:"2026-11-22T10:00:00"`
	User    string `json:"user" doc:"Who enabled it, or Nobody"`
}
