"""Fixtures for the tests of lmcaps inside nova."""

from __future__ import annotations

import os
import re
import sysconfig

import fixtures
from nova.api.validation.extra_specs import validators

from lmcaps.nova import api as nova_api
from lmcaps.nova import extra_specs
from lmcaps.nova import hooks
from lmcaps.nova import policy as nova_policy


class NovaHooks(fixtures.Fixture):
    """lmcaps's hooks enabled in nova for one test, disabled after it."""

    def _setUp(self) -> None:
        if hooks.enabled():
            raise AssertionError('lmcaps hooks leaked from another test')
        hooks.enable()
        self.addCleanup(hooks.disable)


class ExtraSpecValidators(fixtures.Fixture):
    """lmcaps's validators in nova's registry, as its entry point loads them.

    Does what ``validators.load_validators`` does for one plugin module, so
    the tests do not depend on the installed entry points.
    """

    def _setUp(self) -> None:
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.validation.extra_specs.validators.VALIDATORS',
            dict(validators.VALIDATORS)))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.validation.extra_specs.validators.NAMESPACES',
            set(validators.NAMESPACES)))
        for validator in extra_specs.register():
            validators.VALIDATORS[validator.name] = validator
            if ':' in validator.name_regex:
                validators.NAMESPACES.add(
                    validator.name_regex.split(':', 1)[0])
        assert nova_policy.NAMESPACE in validators.NAMESPACES


#: nova's api-paste.ini as installed with nova (data files under the venv).
NOVA_API_PASTE = os.path.join(sysconfig.get_path('data'), 'etc', 'nova',
                              'api-paste.ini')
#: The filter section README.rst documents.
FILTER_SECTION = f"""
[filter:{nova_api.FILTER_NAME}]
paste.filter_factory = lmcaps.nova.api:MigrateLiveFilter.factory
"""
_V21 = re.compile(r'^(keystone = .*\bkeystonecontext)( .*osapi_compute_app_v21)$',
                  re.MULTILINE)


def paste_with_filter(text: str) -> str:
    """nova's api-paste.ini with lmcaps's filter as README.rst places it:
    right after ``keystonecontext`` in both ``openstack_compute_api_v21``
    pipelines (``/v2.1`` and the legacy ``/v2``).

    :raises: AssertionError if nova's file no longer has that shape.
    """
    new, count = _V21.subn(rf'\1 {nova_api.FILTER_NAME}\2', text)
    if count != 2:
        raise AssertionError(f'expected 2 v2.1 keystone pipelines in nova\'s '
                             f'api-paste.ini, found {count}')
    return new + FILTER_SECTION


class ApiPipeline(fixtures.Fixture):
    """``[wsgi] api_paste_config`` naming nova's api-paste.ini with the lmcaps
    filter added; use before nova's OSAPIFixture loads the app.

    :param conf: the ``ConfigOpts`` to set (nova's ``CONF``).
    """

    def __init__(self, conf) -> None:
        super().__init__()
        self.conf = conf

    def _setUp(self) -> None:
        with open(NOVA_API_PASTE, encoding='utf-8') as f:
            text = paste_with_filter(f.read())
        tmp = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(tmp, 'api-paste.ini')
        with open(self.path, 'w', encoding='utf-8') as f:
            f.write(text)
        self.conf.set_override('api_paste_config', self.path, group='wsgi')
        self.addCleanup(self.conf.clear_override, 'api_paste_config',
                        group='wsgi')
