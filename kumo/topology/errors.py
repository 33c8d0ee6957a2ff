"""Errors of the topology layer, each with the HTTP status and short code the REST API reports.

One hierarchy serves the store, the service and the API, so that a conflict found deep in a store
transaction reaches the operator as a 409 with a message that says how to fix the input.
"""

from __future__ import annotations


class KumoError(Exception):
    """Base class: `code` is the API's short error code, `status` its HTTP status."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(KumoError):
    status = 422
    code = "invalid_input"


class NotFound(KumoError):
    status = 404
    code = "not_found"


class Conflict(KumoError):
    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """An object (or a uniqueness claim) with this kind and id exists already."""

    code = "already_exists"

    def __init__(self, kind: str, obj_id: str) -> None:
        super().__init__(f"{kind} with id {obj_id} already exists")
        self.kind = kind
        self.obj_id = obj_id


class VersionConflict(Conflict):
    """An object changed between read and write (optimistic concurrency); the caller may retry."""

    code = "concurrent_change"


class StoreUnavailable(KumoError):
    status = 503
    code = "store_unavailable"


class Forbidden(KumoError):
    """The caller's token does not allow this (a reader writing, a tenant outside its tenant)."""

    status = 403
    code = "forbidden"


class StoreForbidden(KumoError):
    """The store refused these credentials (ZooKeeper: a digest ACL Kumo's znodes were made with)."""

    status = 503
    code = "store_forbidden"
