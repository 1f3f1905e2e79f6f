"""Search attributes operators filter on in the Temporal UI. Registered on every server we start."""

from typing import Final

from temporalio.common import SearchAttributeKey

WORKSPACE_STATUS: Final = SearchAttributeKey.for_keyword("WorkspaceStatus")
WORKSPACE_RUNTIME: Final = SearchAttributeKey.for_keyword("WorkspaceRuntime")
WORKSPACE_BACKEND: Final = SearchAttributeKey.for_keyword("WorkspaceBackend")
LEAK_SUSPECT: Final = SearchAttributeKey.for_bool("LeakSuspect")

# name -> type, as `temporal server start-dev --search-attribute NAME=TYPE` spells it
SEARCH_ATTRIBUTE_TYPES: Final = {
    "WorkspaceStatus": "Keyword",
    "WorkspaceRuntime": "Keyword",
    "WorkspaceBackend": "Keyword",
    "LeakSuspect": "Bool",
}
