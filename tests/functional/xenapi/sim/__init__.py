"""An xapi simulator for tests: the XenAPI XML-RPC wire protocol on 127.0.0.1.

See :mod:`tests.functional.xenapi.sim.model` for what is modelled and the
reference sections it follows, and :mod:`tests.functional.xenapi.sim.server`
for the wire protocol and how it is started.
"""
