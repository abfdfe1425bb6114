"""A WS-Management simulator of a pair of Hyper-V hosts, for tests.

Speaks the WS-Management protocol that WinRM serves (SOAP 1.2 over http
or https, Basic or Negotiate/NTLM authentication with message encryption)
and models the Hyper-V WMI v2 classes a live
migration involves: ``Msvm_ComputerSystem``,
``Msvm_VirtualSystemMigrationService.MigrateVirtualSystemToHost`` and
``Msvm_MigrationJob`` with ``RequestStateChange``.  See :mod:`.wsman`
(protocol), :mod:`.hyperv` (object model), :mod:`.wql` (WQL filters),
:mod:`.server` (HTTP listeners), :mod:`.ntlm` (Negotiate and sealing),
:mod:`.tls` (a throwaway CA) and :mod:`.fixture` (process control).
"""
