"""``lmcaps-nova-compute``: nova-compute with the lmcaps hooks enabled.

Use it in place of ``nova-compute`` (same arguments, same nova.conf).
"""

from __future__ import annotations


def main() -> None:
    # nova.cmd.compute monkey-patches (threading backend) at import; it must
    # be imported before the hooks import nova's libvirt driver.
    from nova.cmd import compute

    from lmcaps.nova import hooks

    hooks.enable()
    compute.main()
