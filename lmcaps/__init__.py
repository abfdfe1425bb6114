"""lmcaps: per-instance live-migration timeout actions, capabilities, pre-checks.

The public API for an embedding host (nova-compute) and the command line:

* :func:`lmcaps.conf.register_opts` — the ``[lmcaps]`` options;
* :func:`lmcaps.drivers.load` — a driver plugin by name;
* :func:`lmcaps.request.validate` / :func:`lmcaps.policy.resolve` — the
  per-instance request and the effective policy;
* :class:`lmcaps.checks.PreCheckRunner` — the pre-live-migration checks;
* :class:`lmcaps.monitor.TimeoutMonitor` — the timeout monitor.

Importing ``lmcaps`` imports no hypervisor client library and no nova.
"""

__version__ = '0.1.0'
