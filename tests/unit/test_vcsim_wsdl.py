"""tools/vcsim/wsdl/vimService.wsdl is what make_wsdl.py writes."""

import importlib.util
import pathlib
import xml.etree.ElementTree as ET

import testtools

WSDL_DIR = (pathlib.Path(__file__).resolve().parents[2] / 'tools' / 'vcsim' /
            'wsdl')
WSDL_NS = '{http://schemas.xmlsoap.org/wsdl/}'


def _generator():
    spec = importlib.util.spec_from_file_location(
        'make_wsdl', WSDL_DIR / 'make_wsdl.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class VimWsdlTest(testtools.TestCase):

    def test_checked_in_wsdl_is_current(self):
        self.assertEqual(_generator().main(),
                         (WSDL_DIR / 'vimService.wsdl').read_text(),
                         'run: python3 tools/vcsim/wsdl/make_wsdl.py > '
                         'tools/vcsim/wsdl/vimService.wsdl')

    def test_operations_the_driver_calls_are_declared(self):
        root = ET.fromstring((WSDL_DIR / 'vimService.wsdl').read_text())
        ops = {op.get('name') for op in
               root.iter(f'{WSDL_NS}operation')}
        for name in ('RetrieveServiceContent', 'Login', 'SessionIsActive',
                     'RetrievePropertiesEx', 'ContinueRetrievePropertiesEx',
                     'CancelRetrievePropertiesEx', 'RelocateVM_Task',
                     'CancelTask', 'Logout', 'TerminateSession'):
            self.assertIn(name, ops)
