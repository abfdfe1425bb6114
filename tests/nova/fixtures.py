"""Fixtures for the tests of lmcaps inside nova."""

from __future__ import annotations

import fixtures
from nova.api.validation.extra_specs import validators

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
