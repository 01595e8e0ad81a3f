-- name: EnsureProject :exec
-- Records a project on its first authenticated request (Keystone's
-- projects exist in Keystone first; instances and other rows reference
-- project.id). The name is the id: Keystone's names are unique per domain
-- only, project.name globally. An existing row is left as it is.
INSERT INTO project (id, name) VALUES (@id, @id)
ON CONFLICT DO NOTHING;
