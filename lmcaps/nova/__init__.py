"""lmcaps inside nova-compute (nova 34); the only lmcaps code importing nova.

* :mod:`lmcaps.nova.hooks` — ``enable()`` / ``disable()``: the per-instance
  timeout in nova's libvirt monitor, the source pre-check and the traits;
* :mod:`lmcaps.nova.vmware` — the pre-check and the deadline (CancelTask on
  nova's RelocateVM_Task) in nova's VMware driver;
* :mod:`lmcaps.nova.policy` — where per-instance values come from (request,
  flavor extra specs, optionally instance metadata, then config);
* :mod:`lmcaps.nova.request` — the os-migrateLive schema fragment;
* :mod:`lmcaps.nova.extra_specs` — the ``lmcaps:`` flavor extra-spec
  validators nova loads from ``nova.api.extra_spec_validators``;
* :mod:`lmcaps.nova.events` — an EventStore over nova's instance actions;
* :mod:`lmcaps.nova.traits` — capabilities as placement traits;
* :mod:`lmcaps.nova.cmd` — the ``lmcaps-nova-compute`` console script;
* :mod:`lmcaps.nova.conf` — the ``[lmcaps_nova]`` options.

Importing this package imports nothing from nova; its modules do, except
:mod:`lmcaps.nova.conf`, which oslo-config-generator loads without nova.
"""
