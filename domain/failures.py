"""Fixed words for failures that operators and every SSE client see. A backend's own error text can
carry internal detail (hosts, paths, request ids, sometimes a secret a daemon echoed back), so it goes
to the worker log and, redacted, to the rescue bundle; events and rows get one message per class."""

from __future__ import annotations

from domain.contract import ActivityErrorType
from domain.secrets import DECRYPT_GLOBAL_FAILED, DECRYPT_WORKSPACE_FAILED

START_FAILED = "could not start the instance (details in the rescue bundle and the worker log)"
START_REFUSED = (
    "could not start the instance: the backend refused its configuration "
    "(details in the rescue bundle and the worker log)"
)
STOP_FAILED = "could not stop the instance (details in the worker log)"
VOLUMES_FOREIGN = "the volumes belong to another platform and were left in place"


def start_failure_message(error_type: str | None) -> str:
    """The public message for a start that failed with this `ApplicationError.type`."""
    fixed: dict[str, str] = {
        ActivityErrorType.BACKEND_CONFIG: START_REFUSED,
        ActivityErrorType.GLOBAL_SECRET_UNDECRYPTABLE: DECRYPT_GLOBAL_FAILED,
        ActivityErrorType.WORKSPACE_SECRET_UNDECRYPTABLE: DECRYPT_WORKSPACE_FAILED,
    }
    return fixed.get(error_type or "", START_FAILED)
