# A one-function fix for python-troveclient 8.0.0 (Debian bookworm), loaded
# by schedule_e2e_test.go through PYTHONPATH when it runs the real `trove`
# CLI's schedule-* and execution-* commands.
#
# troveclient.v1.backups.Backups._get_mistral_client builds its Mistral
# client from the trove CLI's Keystone credentials but passes only the user
# name, password and project name: not their domains. Keystone v3 refuses
# such a password authentication (400 "Expecting to find domain in user"),
# so against any Keystone v3 (v2.0 is gone since Queens) those commands
# cannot authenticate, whatever serves the workflow API. This replacement
# passes the domains too, taken from the CLI's own auth plugin (which the
# trove shell defaults to the domain "default", as here). Nothing else
# changes: the same python-mistralclient calls, URLs, bodies and parsing.
try:
    from troveclient.v1 import backups as _backups
except ImportError:  # not the trove CLI's Python
    _backups = None

if _backups is not None:
    _original = _backups.Backups._get_mistral_client

    def _get_mistral_client(self):
        auth = getattr(self.api.client, 'auth', None)
        if auth is None or not hasattr(auth, '_username'):
            return _original(self)
        from mistralclient.api.client import client as mistral_client
        kwargs = {}
        for name in ('user_domain_id', 'user_domain_name',
                     'project_domain_id', 'project_domain_name'):
            value = getattr(auth, '_' + name, None)
            if value:
                kwargs[name] = value
        return mistral_client(auth_url=auth.auth_url, username=auth._username,
                              api_key=auth._password,
                              project_name=auth._project_name, **kwargs)

    _backups.Backups._get_mistral_client = _get_mistral_client
