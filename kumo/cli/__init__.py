"""The `kumo` command: processes (up, api, demo) and the operator CLI over the REST API."""
