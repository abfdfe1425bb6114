"""Run in a new process: re-attach to a relocation by its task moref and
enforce the original deadline (abort) under the real monitor.

Usage: python -m tests.functional.vmware.reattach_child CONF_JSON REF_JSON
Prints one JSON line: the outcome.
"""

from __future__ import annotations

import json
import sys

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf
from lmcaps import drivers
from lmcaps import events_sql
from lmcaps import monitor
from lmcaps import policy
from lmcaps.drivers import base


def main(conf_json: str, ref_json: str) -> int:
    settings = json.loads(conf_json)
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf([], project='lmcaps-reattach', default_config_files=[])
    driver_cls = drivers.driver_class('vmware')
    driver_cls(conf)
    for group, values in settings.items():
        for key, value in values.items():
            conf.set_override(key, value, group=group)
    driver = drivers.load('vmware', conf)
    ref = base.MigrationRef.from_json(ref_json)
    migration = driver.reattach(ref)
    pol = policy.resolve(conf, ref.data_gib, [(policy.REQUEST, {
        'completion_timeout': int(ref.spec.completion_timeout),
        'timeout_action': 'abort'})], declaration=driver.host_declaration())
    store = events_sql.SQLEventStore.from_conf(conf)
    with monitor.TimeoutMonitor.from_conf(conf, store) as mon:
        watch = mon.watch(driver, migration, pol,
                          instance_uuid=ref.spec.instance,
                          request_id='req-reattach')
        outcome = watch.wait(60)
    print(json.dumps({'phase': outcome.phase.value, 'action': outcome.action,
                      'action_error': outcome.action_error,
                      'location': outcome.location.as_dict(),
                      'late': outcome.fired_at - outcome.deadline}))
    driver.close()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], sys.argv[2]))
