"""Tests of lmcaps.masking and lmcaps.validation: one table of URL forms."""

from __future__ import annotations

import logging

import ddt
from oslotest import base as test_base

from lmcaps import masking
from lmcaps import validation


@ddt.ddt
class MaskURLTest(test_base.BaseTestCase):

    @ddt.data(
        ('postgresql://u:pw1@h/db', 'postgresql://u:***@h/db'),
        ('postgresql+psycopg2://u:p%40w@h:5432/db',
         'postgresql+psycopg2://u:***@h:5432/db'),
        ('postgresql://u:p@ss/pw1@h/db', 'postgresql://***@h/db'),
        ('postgresql://u:a:pw1@h/db', 'postgresql://u:***@h/db'),
        ('postgresql://u@h/db?password=pw1',
         'postgresql://u@h/db?password=***'),
        ('postgresql://u@h/db?sslmode=require&sslpassword=pw1',
         'postgresql://u@h/db?sslmode=require&sslpassword=***'),
        ('postgrsql://u:pw1@h/db', 'postgrsql://u:***@h/db'),
        ('postgresql//u:pw1@h/db', '***'),
        ('u:pw1@h/db', '***'),
        ('qemu+ssh://root:pw1@host/system', 'qemu+ssh://root:***@host/system'),
        ('qemu+tcp://root@host/system', 'qemu+tcp://root@host/system'),
        ('qemu:///system', 'qemu:///system'),
        ('sqlite:////var/lib/ev.sqlite', 'sqlite:////var/lib/ev.sqlite'),
    )
    @ddt.unpack
    def test_table(self, url: str, masked: str) -> None:
        self.assertEqual(masked, masking.mask_url(url))
        self.assertNotIn('pw1', masking.mask_url(url))

    def test_sqlalchemy_url_object(self) -> None:
        import sqlalchemy as sa
        url = sa.engine.make_url('postgresql://u:pw1@h/db?password=pw2')
        self.assertEqual('postgresql://u:***@h/db?password=***',
                         masking.mask_url(url))

    def test_scrub_and_log_filter(self) -> None:
        masking.forget()
        self.addCleanup(masking.forget)
        masking.remember('postgresql://u:p%40ss-word@h/db')
        self.assertEqual('x *** y ***',
                         masking.scrub('x p%40ss-word y p@ss-word'))
        record = logging.LogRecord('lmcaps', logging.ERROR, __file__, 1,
                                   'cannot open %s', ('p@ss-word',), None)
        masking.ScrubFilter().filter(record)
        self.assertEqual('cannot open ***', record.getMessage())


class ValidationTest(test_base.BaseTestCase):

    def test_echo_is_short_and_escaped(self) -> None:
        text = validation.echo('a\u202e\x00' + 'x' * 1000)
        self.assertLess(len(text), 100)
        self.assertTrue(text.isprintable())
        self.assertIn('\\u202e\\x00', text)

    def test_instance_key(self) -> None:
        uid = '8A1F3A2E-4D5C-4B7A-9E0F-1A2B3C4D5E6F'
        self.assertEqual(uid.lower(), validation.instance_key(uid))
        key = validation.instance_key('web-frontend-production-eu-west-1')
        self.assertEqual(36, len(key))
        self.assertEqual(key, validation.instance_key(
            'web-frontend-production-eu-west-1'))

    def test_escape_text_keeps_lines(self) -> None:
        self.assertEqual('a\\x00\nb\tc', validation.escape_text('a\x00\nb\tc'))
