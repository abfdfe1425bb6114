"""Capabilities as placement traits.

Each operation a declaration says is ``complete`` becomes
``CUSTOM_LMCAPS_<OPERATION>``; post-copy also gives os-traits'
``COMPUTE_MIGRATE_POST_COPY``, and auto-converge in the host facts
``COMPUTE_MIGRATE_AUTO_CONVERGE`` (nova reports neither itself).  ``partial``
gives no trait: a request scheduled by a trait must pass the pre-checks.
"""

from __future__ import annotations

from typing import Any

import os_traits

from lmcaps import capabilities as caps

PREFIX = os_traits.CUSTOM_NAMESPACE + 'LMCAPS_'

#: Declaration fact saying migrations use auto-converge ('True' / 'False').
AUTO_CONVERGE_FACT = 'auto_converge'

OPERATION_TRAITS = {op: PREFIX + op.value.upper() for op in caps.Operation}

#: Every trait lmcaps may report: the ones it owns on a provider.
OWNED = frozenset(OPERATION_TRAITS.values()) | {
    os_traits.COMPUTE_MIGRATE_POST_COPY,
    os_traits.COMPUTE_MIGRATE_AUTO_CONVERGE,
}


def traits_for(declaration: caps.Declaration) -> set[str]:
    """The traits a host with ``declaration`` should have."""
    traits = {name for op, name in OPERATION_TRAITS.items()
              if declaration.support(op) is caps.Support.COMPLETE}
    if declaration.support(
            caps.Operation.FORCE_COMPLETE_POSTCOPY) is caps.Support.COMPLETE:
        traits.add(os_traits.COMPUTE_MIGRATE_POST_COPY)
    if declaration.facts.get(AUTO_CONVERGE_FACT) == 'True':
        traits.add(os_traits.COMPUTE_MIGRATE_AUTO_CONVERGE)
    return traits


def update_provider_tree(provider_tree: Any, nodename: str,
                         declaration: caps.Declaration) -> None:
    """Set the lmcaps traits on ``nodename``; drop stale ones it owns."""
    wanted = traits_for(declaration)
    have = set(provider_tree.data(nodename).traits)
    stale = (have & OWNED) - wanted
    if stale:
        provider_tree.remove_traits(nodename, *sorted(stale))
    if wanted - have:
        provider_tree.add_traits(nodename, *sorted(wanted - have))
