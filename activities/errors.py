"""One translation from backend errors to Temporal outcomes, shared by every activity."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.exceptions import ApplicationError

from backends.base import BackendConfigError, BackendError, ForeignResourceError
from domain.contract import ActivityErrorType
from domain.redaction import Redactor

log = logging.getLogger("molecule.activities")


@contextmanager
def backend_outcome(
    what: str, workspace_id: str, redactor: Redactor | None = None, *, config_is_final: bool = True
) -> Iterator[None]:
    """Run a backend call: a config error or another platform's resource is a non-retryable
    failure, anything else a BackendError the retry policy retries. The backend's words go to the
    log and (redacted) into the failure; events never carry them (domain.failures)."""
    try:
        yield
    except BackendError as exc:
        detail = redactor.redact(str(exc)) if redactor is not None else str(exc)
        log.warning("workspace %s: %s failed: %s", workspace_id, what, detail)
        if isinstance(exc, ForeignResourceError):
            raise ApplicationError(
                detail, type=ActivityErrorType.FOREIGN_RESOURCE, non_retryable=True
            ) from None
        if isinstance(exc, BackendConfigError) and config_is_final:
            raise ApplicationError(
                detail, type=ActivityErrorType.BACKEND_CONFIG, non_retryable=True
            ) from None
        raise ApplicationError(detail, type=ActivityErrorType.BACKEND) from None


def not_found(workspace_id: str) -> ApplicationError:
    return ApplicationError(
        f"workspace {workspace_id}: row not found",
        type=ActivityErrorType.WORKSPACE_NOT_FOUND,
        non_retryable=True,
    )


def superseded(workspace_id: str, generation: int) -> ApplicationError:
    return ApplicationError(
        f"workspace {workspace_id}: generation {generation} was superseded (removed, paused or restarted)",
        type=ActivityErrorType.SUPERSEDED,
        non_retryable=True,
    )
