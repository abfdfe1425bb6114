"""Options of the powervm driver (``[lmcaps_powervm]``)."""

from __future__ import annotations

from oslo_config import cfg

#: migrate_lpar keyword arguments a request may pass (spec.options or
#: Destination.data).
MIGRATE_KWARGS = ('tgt_mgmt_svr', 'tgt_mgmt_usr', 'virtual_fc_mappings',
                  'virtual_scsi_mappings', 'dest_msp_name', 'source_msp_name',
                  'spp_id', 'sdn_override', 'vlan_check_override',
                  'vlan_mappings', 'check_affinity_score')

OPTS = [
    cfg.HostAddressOpt('host', default='localhost',
                       help='NovaLink or HMC REST API server of the source '
                            'managed system.'),
    cfg.PortOpt('port', help='Its TCP port; default 12443 for https, '
                             '12080 for http.'),
    cfg.StrOpt('protocol', default='https', choices=('https', 'http'),
               help='https, or http (only for a REST server on this '
                    'host).'),
    cfg.StrOpt('username', default='',
               help='REST API user (an HMC/NovaLink user ID).'),
    cfg.StrOpt('password', default='', secret=True,
               help='Password of that user.'),
    cfg.BoolOpt('tls_verify', default=True,
                help='Verify the REST server certificate (against ca_file, '
                     'or the system CA bundle). False is insecure and only '
                     'for tests. Related: ca_file.'),
    cfg.StrOpt('ca_file',
               help='PEM CA bundle that signs the REST server certificate; '
                    'default: the system CA bundle.'),
    cfg.IntOpt('job_timeout', default=7200, min=1,
               help='Seconds a Migrate job may run before pypowervm cancels '
                    'it (POST jobs/{id}/cancel); also the limit of a '
                    'MigrateRecover job. pypowervm default: 7200.'),
    cfg.FloatOpt('http_timeout', default=60.0, min=1.0,
                 help='Seconds one REST request may take.'),
]
