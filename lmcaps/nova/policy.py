"""Per-instance values in nova and the policy they resolve to.

One precedence, first wins, field by field:

1. ``request`` — the live-migration request (:mod:`lmcaps.nova.request`);
2. ``flavor`` — flavor extra specs ``lmcaps:completion_timeout`` (absolute
   seconds), ``lmcaps:timeout_action``, ``lmcaps:force_complete_mode``;
3. ``metadata`` — the same keys in instance metadata, only with
   ``[lmcaps_nova] instance_metadata = True``;
4. ``config`` — the compute driver's host-wide values (:class:`HostDefaults`)
   and ``[lmcaps] force_complete_mode``.  On libvirt: nova's ``[libvirt]
   live_migration_completion_timeout`` (per GiB) and
   ``live_migration_timeout_action``; post-copy is permitted when nova's
   ``[libvirt] live_migration_permit_post_copy`` is True (nova then starts
   migrations with VIR_MIGRATE_POSTCOPY).  On VMware, where nova has no
   such options: ``[lmcaps_nova] vmware_completion_timeout_per_gib`` (0 =
   never, as nova's VMware driver) and abort (:mod:`lmcaps.nova.vmware`).

The per-instance values are resolved once, in the source pre-check
(:func:`resolve_instance`), within the operator's bounds (``[lmcaps]``
min/max_completion_timeout and allowed_timeout_actions, :mod:`lmcaps.bounds`)
whether or not the ``timeout_bounds`` check is enabled:

* a request or flavor value (set by an operator) out of bounds is refused
  (``InvalidRequest``), as a bad value is;
* instance metadata (set by the instance owner) never refuses: an invalid
  key or value is ignored, a timeout out of bounds is clamped into them
  (``0``, never, becomes ``max_completion_timeout`` where one is set), a
  timeout action not allowed is ignored; each is a note of the
  :class:`Resolution`.

The monitor enforces that resolution (:mod:`lmcaps.nova.carry`), not a
second reading of the instance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from lmcaps import bounds as lmcaps_bounds
from lmcaps import exception
from lmcaps import policy as lmcaps_policy
from lmcaps import request as lmcaps_request
from lmcaps.nova import conf as nova_conf
from lmcaps.nova import request as nova_request

REQUEST = lmcaps_policy.REQUEST
FLAVOR = 'flavor'
METADATA = 'metadata'
CONFIG = lmcaps_policy.CONFIG

#: Namespace of flavor extra specs and instance metadata keys.
NAMESPACE = 'lmcaps'

Layers = Sequence[tuple[str, Mapping[str, Any]]]


def spec_key(field: str) -> str:
    """``completion_timeout`` -> ``lmcaps:completion_timeout``."""
    return f'{NAMESPACE}:{field}'


#: Extra-spec / metadata key -> lmcaps request field.
SPEC_FIELDS: Mapping[str, str] = {
    spec_key(f): f for f in lmcaps_request.FIELDS}


def from_specs(specs: Mapping[str, str], source: str) -> dict[str, Any]:
    """The lmcaps values in string key/value pairs (extra specs, metadata).

    Keys outside the ``lmcaps:`` namespace are ignored; an unknown
    ``lmcaps:`` key or a bad value is an error, as in nova's validator.

    :param source: ``flavor`` or ``metadata``, for the error message.
    :raises: InvalidRequest naming the key and the allowed values.
    """
    prefix = NAMESPACE + ':'
    values: dict[str, Any] = {}
    for key, value in specs.items():
        if not key.startswith(prefix):
            continue
        field = SPEC_FIELDS.get(key)
        if field is None:
            raise exception.InvalidRequest(
                reason=f'{source} key {key!r} is not an lmcaps key; allowed: '
                       f"{', '.join(sorted(SPEC_FIELDS))}")
        prop = lmcaps_request.REQUEST_SCHEMA['properties'][field]
        if prop['type'] == 'integer':
            try:
                number = int(str(value).strip())
            except ValueError:
                raise exception.InvalidRequest(
                    reason=f'{source} key {key}: {value!r} is not an '
                           f'integer') from None
        values[field] = number if prop['type'] == 'integer' else value
    try:
        return lmcaps_request.validate(values)
    except exception.InvalidRequest as exc:
        raise exception.InvalidRequest(
            reason=f"{source} keys {', '.join(sorted(map(spec_key, values)))}"
                   f": {exc.kwargs.get('reason', exc)}") from exc


#: The per-instance layers, highest precedence first.
ORDER = (REQUEST, FLAVOR, METADATA)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The per-instance values of one live migration, resolved once.

    :param picked: field -> ``(value, source)`` for each field a
        per-instance layer gives (the first layer of :data:`ORDER` that
        has it); values are within the operator's bounds.
    :param notes: what was done to the owner's instance metadata (ignored,
        clamped), one line each; empty when nothing was.
    """

    picked: Mapping[str, tuple[Any, str]]
    notes: tuple[str, ...] = ()

    @property
    def layers(self) -> list[tuple[str, dict[str, Any]]]:
        """The picked values as ``(source, values)`` layers, in
        :data:`ORDER` (what :func:`lmcaps.policy.resolve` takes)."""
        out = []
        for source in ORDER:
            values = {field: value for field, (value, src)
                      in sorted(self.picked.items()) if src == source}
            if values:
                out.append((source, values))
        return out

    def without(self, source: str, note: str) -> Resolution:
        """This resolution without the values of ``source``, with ``note``."""
        return Resolution(
            picked={f: v for f, v in self.picked.items() if v[1] != source},
            notes=(*self.notes, note))

    def uses(self, source: str) -> bool:
        return any(src == source for _value, src in self.picked.values())


def owner_values(conf: cfg.ConfigOpts, metadata: Mapping[str, str]
                 ) -> tuple[dict[str, Any], list[str]]:
    """The usable ``lmcaps:`` values of instance metadata, and notes.

    Each key is read on its own: an unknown key or a bad value is ignored
    with a note; nothing here raises.  Bounds are applied by the caller to
    the values that win (:func:`resolve_instance`).
    """
    values: dict[str, Any] = {}
    notes = []
    prefix = NAMESPACE + ':'
    for key in sorted(metadata):
        if not key.startswith(prefix):
            continue
        try:
            values.update(from_specs({key: metadata[key]}, METADATA))
        except exception.InvalidRequest as exc:
            notes.append(f"{key} ignored: {exc.kwargs.get('reason', exc)}")
    return values, notes


def resolve_instance(conf: cfg.ConfigOpts, context: Any,
                     instance: Any) -> Resolution:
    """The per-instance values of this live migration of ``instance``.

    Precedence request > flavor > instance metadata (only with
    ``[lmcaps_nova] instance_metadata``), field by field; the operator's
    bounds applied as the module says.

    :raises: InvalidRequest for a bad or out-of-bounds request or flavor
        value, naming the layer, the key and the allowed values.
    """
    operator: list[tuple[str, dict[str, Any]]] = []
    requested = nova_request.from_instance(instance, context)
    if requested:
        operator.append((REQUEST, requested))
    flavor = from_specs(instance.flavor.extra_specs or {}, FLAVOR)
    if flavor:
        operator.append((FLAVOR, flavor))
    picked: dict[str, tuple[Any, str]] = {}
    for source, values in operator:
        for field, value in values.items():
            picked.setdefault(field, (value, source))
    problems = []
    for field, (value, source) in sorted(picked.items()):
        for text in lmcaps_bounds.problems(conf, {field: value}):
            where = (spec_key(field) if source == FLAVOR
                     else nova_request.api_name(field))
            problems.append(f'{source} {where}: {text}')
    if problems:
        raise exception.InvalidRequest(reason='; '.join(problems))
    notes: list[str] = []
    if conf[nova_conf.GROUP].instance_metadata:
        owner, notes = owner_values(conf, instance.metadata or {})
        winning = {f: v for f, v in owner.items() if f not in picked}
        kept, clamped = lmcaps_bounds.clamp(
            conf, winning, label={f: spec_key(f) for f in winning})
        notes += clamped
        for field, value in kept.items():
            picked[field] = (value, METADATA)
    return Resolution(picked=picked, notes=tuple(notes))


@dataclasses.dataclass(frozen=True)
class HostDefaults:
    """The host-wide values of a nova compute driver, the ``config`` layer.

    :param completion_timeout: seconds for this migration (already
        multiplied by its GiB); 0 = never.
    :param timeout_action: ``abort`` or ``force_complete``.
    :param permit_post_copy: whether a force-complete may switch to
        post-copy on this host.
    """

    completion_timeout: int
    timeout_action: str
    permit_post_copy: bool

    def layered(self, layers: Layers) -> list[tuple[str, Mapping]]:
        """``layers`` followed by these values as the config layer."""
        return [*layers, (CONFIG, {
            'completion_timeout': self.completion_timeout,
            'timeout_action': self.timeout_action,
        })]

    def resolve(self, conf: cfg.ConfigOpts,
                layers: Layers) -> lmcaps_policy.EffectivePolicy:
        """The effective policy of ``layers`` over these values.

        :raises: InvalidRequest for a timeout out of range.
        """
        # data_gib does not matter: the config layer always gives a timeout.
        return lmcaps_policy.resolve(conf, 2.0, self.layered(layers),
                                     permit_post_copy=self.permit_post_copy)


def libvirt_defaults(conf: cfg.ConfigOpts,
                     completion_timeout: int) -> HostDefaults:
    """nova's ``[libvirt]`` options as the config layer.

    :param completion_timeout: nova's host-wide timeout for this migration in
        seconds (:func:`config_timeout`); 0 = never.
    """
    return HostDefaults(
        completion_timeout=completion_timeout,
        timeout_action=conf.libvirt.live_migration_timeout_action,
        permit_post_copy=conf.libvirt.live_migration_permit_post_copy)


def config_timeout(conf: cfg.ConfigOpts, data_gb: float) -> int:
    """nova's host-wide completion timeout in seconds, as its monitor does."""
    return int(conf.libvirt.live_migration_completion_timeout * data_gb)


def with_config(conf: cfg.ConfigOpts, layers: Layers,
                completion_timeout: int) -> list[tuple[str, Mapping]]:
    """The layers followed by nova's host-wide options as the config layer.

    :param completion_timeout: nova's host-wide timeout for this migration in
        seconds (:func:`config_timeout`); 0 = never.
    """
    return libvirt_defaults(conf, completion_timeout).layered(layers)


def resolve(conf: cfg.ConfigOpts, layers: Layers,
            completion_timeout: int) -> lmcaps_policy.EffectivePolicy:
    """The effective policy over nova's host-wide options.

    :param completion_timeout: nova's host-wide timeout for this migration in
        seconds (:func:`config_timeout`); 0 = never.
    """
    return libvirt_defaults(conf, completion_timeout).resolve(conf, layers)
