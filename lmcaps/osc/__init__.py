"""lmcaps for operators, through OpenStackClient and openstacksdk.

* :mod:`lmcaps.osc.sdk` — :func:`~lmcaps.osc.sdk.live_migrate_server`
  (``os-migrateLive`` with ``timeout_seconds`` / ``on_timeout`` /
  ``force_complete_mode``, read by nova-api's ``lmcaps_migrate_live``
  filter) and :func:`~lmcaps.osc.sdk.capabilities` (each compute host's
  lmcaps traits, from placement), on an ``openstack.connection.Connection``;
* :mod:`lmcaps.osc.plugin` — the OpenStackClient plugin module
  (entry point ``openstack.cli.extension``: ``lmcaps``);
* :mod:`lmcaps.osc.commands` — ``openstack lmcaps server migrate`` and
  ``openstack lmcaps capabilities`` (entry points ``openstack.lmcaps.v1``).

Install with ``pip install 'lmcaps[osc]'``.  Importing this package imports
nothing; its modules import openstacksdk (and osc-lib for the commands).
"""
